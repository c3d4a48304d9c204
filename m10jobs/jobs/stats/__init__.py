"""The daily stats flow: m10-daily-stats."""

from m10jobs.jobs.stats.daily import JOB

__all__ = ["JOB"]
