"""The fallback upload flow: m10-retry-r2-fallbacks."""

from m10jobs.jobs.fallback.retry import JOB

__all__ = ["JOB"]
