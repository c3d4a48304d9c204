"""The outbox flow: m10-outbox-processor."""

from m10jobs.jobs.outbox.process import JOB

__all__ = ["JOB"]
