"""A job's --help names every lease it may take once, as an operator finds it in
`m10 locks list` (host-local ones with their `@<hostname>`)."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from m10jobs.cli.jobcommand import job_command
from m10jobs.registry import HOST_PLACEHOLDER, Job, jobs


def help_leases(job: Job) -> list[str]:
    out = CliRunner().invoke(job_command(job), ["--help"], terminal_width=200).output
    found = re.search(r"Lease\(s\): (.*?)\.\s+One pass", " ".join(out.split()))
    assert found, out
    return found.group(1).split(", ")


@pytest.mark.parametrize("job", jobs(), ids=lambda j: j.script)
def test_help_lists_each_lease_once_with_its_host(job: Job) -> None:
    leases = help_leases(job)
    assert len(leases) == len(set(leases)), leases
    assert leases == list(job.lease_patterns)
    for task in job.tasks:
        assert task.lease_pattern in leases
        assert (f"@{HOST_PLACEHOLDER}" in task.lease_pattern) == (task.scope == "host")


def test_maintenance_names_its_shared_and_host_local_leases() -> None:
    (maintenance,) = [j for j in jobs() if j.script == "m10-maintenance"]
    leases = help_leases(maintenance)
    assert leases.count("dl_reconcile") == 1
    assert f"retention_cleanup@{HOST_PLACEHOLDER}" in leases and "retention_cleanup" in leases
