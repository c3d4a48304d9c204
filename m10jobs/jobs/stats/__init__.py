"""The daily stats flow: m10-daily-stats computes days into m10_recovery.daily_stats
(cluster-wide) and writes this host's month CSVs and markers from it (host-local).

daily.py is the pass (imported when it runs), statsfile.py the CSV and marker
format (also read by retention and `m10 postflight`), settings.py [daily_stats].
"""

from __future__ import annotations

from datetime import date

import click

from m10jobs.jobs.stats.settings import LOCK, DailyStatsSettings
from m10jobs.registry import Flow, Job, Task


def _date(ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None
    # Whichever of the two is parsed second sees the other: a reversed range is a usage
    # error (2), not an empty pass that exits 0.
    start = day if param.name == "start_date" else ctx.params.get("start_date")
    until = day if param.name == "until" else ctx.params.get("until")
    if start is not None and until is not None and start > until:
        raise click.UsageError(
            f"--start-date {start} is after --until {until}; give a start on or before the end"
        )
    return day


JOB = Job(
    script="m10-daily-stats",
    checks="m10jobs.jobs.stats.health:checks",
    summary="Compute missing days into m10_recovery.daily_stats; write this host's "
    "m10_stats_YYYY-MM.csv from it, .processed, upload.",
    example="m10-daily-stats --start-date 2026-01-01 --dry-run",
    schedule="*-*-* 00:05:00",
    jitter_seconds=0,  # seed: daily at 00:05
    tasks=(
        Task(
            "stats_compute",
            LOCK,
            "m10jobs.jobs.stats.daily:compute_pass",
            "Compute and store missing days (cluster-wide, fenced)",
        ),
        Task(
            "stats_export",
            LOCK,
            "m10jobs.jobs.stats.daily:export_pass",
            "Write this host's CSVs and markers from the table, upload",
            scope="host",
        ),
    ),
    after=("postgresql.service",),
    options=(
        click.Option(
            ["--start-date"],
            metavar="YYYY-MM-DD",
            callback=_date,
            help="First day to compute (default: the day after the last computed "
            "one, or yesterday on a first run); days present are skipped.",
        ),
        click.Option(
            ["--until"],
            metavar="YYYY-MM-DD",
            callback=_date,
            help="Last day to compute and export (default: yesterday).",
        ),
    ),
    produces=(
        Flow(
            "table",
            "daily_stats",
            "m10_recovery.daily_stats",
            "Computed days, once for the cluster; every host's CSVs are written from it",
            ("m10-daily-stats",),
        ),
        Flow(
            "checkpoint",
            "CSV stats files",
            "$M10_LOG_DIR/m10_stats_YYYY-MM.csv",
            "Daily stats, one file per month on every host",
            ("retention_cleanup",),
        ),
        Flow(
            "marker",
            ".processed",
            "$M10_LOG_DIR/m10_stats_YYYY-MM.csv.processed",
            "Last date, rows and sha256 of the CSV",
            ("m10 postflight",),
        ),
    ),
    consumes=(
        "m10_recovery.outbox",
        "m10_recovery.dead_letter_archive",
        "m10_recovery.retention_jobs",
    ),
    settings=(DailyStatsSettings,),
)
