"""Command-line surface: job commands generated from the registry, and `m10`."""
