"""The canary flow: m10-canary writes the report, m10-rollback acts on it."""

from m10jobs.jobs.canary.rollback import JOB as ROLLBACK
from m10jobs.jobs.canary.runner import JOB as CANARY

JOBS = (CANARY, ROLLBACK)
