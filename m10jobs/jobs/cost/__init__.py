"""The cost flow: aos-cost-snapshot-hourly and aos-cost-snapshot-daily."""

from m10jobs.jobs.cost.daily import JOB as DAILY
from m10jobs.jobs.cost.hourly import JOB as HOURLY

JOBS = (HOURLY, DAILY)
