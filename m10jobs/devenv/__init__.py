"""Throwaway local services (PostgreSQL, Redis, S3) for `make demo` and the tests."""
