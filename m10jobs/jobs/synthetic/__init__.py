"""The synthetic traffic flow: m10-synthetic-traffic."""

from m10jobs.jobs.synthetic.traffic import JOB

__all__ = ["JOB"]
