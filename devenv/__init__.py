"""Throwaway local services (PostgreSQL, Redis, S3) for `make demo`, the tests and the
benchmarks.  Kept outside the `m10jobs` package so that it never ships in the wheel or
lands on a production host."""
