"""Console-script targets: `m10-maintenance = "m10jobs.cli.entry:m10_maintenance"`.

Each attribute is built on first access from the job registry, so adding a job
means declaring it and listing its script in pyproject.toml, nothing else.
"""

from __future__ import annotations

import click


def __getattr__(attr: str) -> click.Command:
    if attr.startswith("__"):  # the import system probing (__path__ ...), not a script
        raise AttributeError(attr)
    from m10jobs.cli.jobcommand import job_command
    from m10jobs.registry import by_script

    try:
        return job_command(by_script(attr.replace("_", "-")))
    except KeyError:
        raise AttributeError(attr) from None
