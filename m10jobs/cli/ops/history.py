"""`m10 history`: the run history, cluster-wide (m10_recovery.job_runs, migration 170).

Every run that reached the database is recorded by the runner, one row per task: host,
job, task, run id, start, end, exit code, its one-line error and its summary figures.
Not recorded: dry runs, and starts skipped (75) before connecting because every lease
they need was held elsewhere.  Kept for `[retention.job_runs] max_age_days`.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import click

from m10jobs.cli.adminkit import admin_command
from m10jobs.errors import ExitCode

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str | None) -> tuple[datetime | None, float | None]:
    """--since: an age (`90m`, `6h`, `2d`: measured by the database clock) or an ISO date
    or timestamp (`2026-05-01`, `2026-05-01T12:00:00+00:00`; without a zone: UTC)."""
    if value is None:
        return None, None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", value)
    if m:
        return None, float(m.group(1)) * _UNITS[m.group(2)]
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an age (90m, 6h, 2d, 1w) nor an ISO date/time "
            "(2026-05-01, 2026-05-01T12:00:00+00:00)",
            param_hint="--since",
        ) from None
    if when.tzinfo is None:
        from datetime import UTC

        when = when.replace(tzinfo=UTC)
    return when, None


def _job(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A job's script name (m10-maintenance); `maintenance` is accepted for it too."""
    if value is None:
        return None
    from m10jobs.registry import jobs

    names = [j.script for j in jobs()]
    for name in (value, f"m10-{value}"):
        if name in names:
            return name
    raise click.BadParameter(f"no job {value!r}; one of: {', '.join(names)}")


def _cell(v: Any) -> str:
    if hasattr(v, "isoformat"):
        return v.isoformat(timespec="seconds")
    return "-" if v is None else str(v)


@admin_command(
    None,
    "history",
    help="Recent runs of every job on every host, newest first (one row per task): host, "
    "job, task, start, duration, exit code and the run's own error line.  Cluster-wide "
    "(PostgreSQL).  Dry runs and starts skipped before connecting (lease held elsewhere) "
    "are not recorded.",
    short_help="Recent runs of every job on every host, with exit codes and errors.",
    epilog="\b\nExamples:\n  m10 history\n  m10 history m10-maintenance --failed --since 1d\n"
    "  m10 history --host db2 --limit 100 --json | jq .error",
)
@click.argument("job", required=False, callback=_job)
@click.option("--host", metavar="HOST", help="Only runs on this host (its M10_HOSTNAME).")
@click.option("--failed", is_flag=True, help="Only failed tasks (exit code neither 0 nor 75).")
@click.option(
    "--since",
    metavar="AGE|TIME",
    help="Only runs started since: an age (90m, 6h, 2d, 1w) or an ISO date/time (UTC if no zone).",
)
@click.option("--limit", type=click.IntRange(1, 10000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
def history(
    config: Any,
    log: Any,
    job: str | None,
    host: str | None,
    failed: bool,
    since: str | None,
    limit: int,
    as_json: bool,
) -> int:
    from m10jobs.edges import db
    from m10jobs.edges.queries import query

    since_at, since_s = parse_since(since)
    dsn = config.require("database_url")
    with db.connect(dsn, app="m10 history") as conn, db.translated(dsn):
        rows = conn.execute(
            query("history_list"),
            {
                "job": job,
                "host": host,
                "failed": failed,
                "since": since_at,
                "since_s": since_s,
                "limit": limit,
            },
        ).fetchall()
    if as_json:
        for r in rows:
            click.echo(json.dumps(r, default=str))
        return ExitCode.OK
    if not rows:
        click.echo("no runs recorded" + (" that match" if job or host or failed or since else ""))
        return ExitCode.OK
    from m10jobs.cli.table import table

    lines = table(
        [("STARTED", "HOST", "JOB", "TASK", "RUN", "SECONDS", "EXIT", "ERROR")]
        + [
            (
                _cell(r["started_at"]),
                r["host"],
                r["job"],
                r["task"],
                r["run_id"],
                f"{r['duration_s']:.1f}",
                str(r["exit_code"]),
                r["error"] or "-",
            )
            for r in rows
        ]
    )
    click.echo("\n".join(lines))
    return ExitCode.OK


COMMAND = history
