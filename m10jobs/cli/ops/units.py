"""`m10 units`: render the systemd units from the registry; record unit failures."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from m10jobs.cli import Group
from m10jobs.cli.adminkit import CONTEXT, admin_command
from m10jobs.config import GLOBAL
from m10jobs.errors import ExitCode


def checkout_units() -> Path | None:
    """./systemd when the working directory is an m10jobs checkout, else None: an
    installed package has no place of its own for units (never site-packages)."""
    cwd = Path.cwd()
    try:
        ours = 'name = "m10jobs"' in (cwd / "pyproject.toml").read_text()
    except OSError:
        return None
    return cwd / "systemd" if ours and (cwd / "m10jobs" / "registry.py").is_file() else None


@click.group(cls=Group, context_settings=CONTEXT)
def units() -> None:
    """systemd units generated from the job registry."""


@units.command("render", context_settings=CONTEXT)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    help="Directory to write the units to (default: ./systemd, inside a checkout only).",
)
@click.option(
    "--prefix",
    default="/opt/m10jobs",
    show_default=True,
    help="Install prefix the ExecStart= lines point into.",
)
@click.option(
    "--metrics-dir",
    metavar="DIR",
    default=GLOBAL["metrics_dir"].example,
    show_default=True,
    help="The one directory the sandbox lets jobs write metrics to; set M10_METRICS_DIR to it.",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when the units are stale.")
def render(output: Path | None, prefix: str, metrics_dir: str, check: bool) -> None:
    """Write a .service and .timer per job (and the failure template).

    \b
    Examples:
      m10 units render --check                      (in a checkout: ./systemd)
      m10 units render --output /etc/systemd/system
    """
    from m10jobs.units import render_all, stale, write

    output = output or checkout_units()
    if output is None:
        raise click.UsageError(
            f"give --output DIR: {Path.cwd()} is not an m10jobs checkout "
            "(only there do units default to ./systemd)"
        )
    generated = render_all(prefix, metrics_dir)
    if check:
        outdated = stale(output, generated)
        for name in outdated:
            click.echo(f"stale: {output / name}")
        if outdated:
            click.echo("units are stale: run `m10 units render` and commit the result", err=True)
        click.get_current_context().exit(ExitCode.FAILED if outdated else ExitCode.OK)
    changed = write(output, generated)
    click.echo(
        f"{len(changed)} unit file(s) updated in {output}"
        if changed
        else f"units in {output} are current"
    )


@admin_command(
    units, "record-failure", help="OnFailure= hook: log the failed unit and stamp a metric."
)
@click.argument("unit")
def record_failure(config: Any, log: Any, unit: str) -> int:
    from m10jobs.docpaths import doc_path
    from m10jobs.edges.files import file_lock
    from m10jobs.edges.metrics import Gauge, write_gauges

    log.error(
        "unit %s failed; see `journalctl -u %s` and %s",
        unit,
        unit,
        doc_path("runbook.md"),
        extra={"unit": unit},
    )
    if config.metrics_dir:
        path = Path(config.metrics_dir) / "m10_unit_failures.prom"
        with file_lock(path):
            write_gauges(
                path,
                "m10-failure",
                [
                    Gauge(
                        "m10_unit_last_failure_timestamp_seconds",
                        time.time(),
                        "Unix time each unit last failed.",
                        {"unit": unit},
                    )
                ],
                merge=True,
            )
    return ExitCode.OK


COMMAND = units
