"""`m10 postflight`: check every daily stats CSV against its `.processed` marker.

Per file: the CSV parses, the marker exists and agrees (sha256, rows, last
date); across files: no missing day; the newest row is yesterday (in the
daily_stats time zone).  Exit 0, or 65 with one line per problem naming the
file and the mismatch.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from m10jobs.cli.adminkit import admin_command
from m10jobs.errors import BadInput, ExitCode


def check(log_dir: Path, yesterday: date) -> tuple[list[str], list[str]]:
    """(problems, ok lines) for every stats CSV in log_dir."""
    from m10jobs.jobs.stats.statsfile import marker_mismatches, month_files, parse, read_marker

    problems: list[str] = []
    ok: list[str] = []
    files = month_files(log_dir)
    if not files:
        return [f"{log_dir}: no m10_stats_YYYY-MM.csv found; run m10-daily-stats first"], ok
    previous: date | None = None
    for path in files:
        try:
            stats = parse(path)
            marker = read_marker(path)
        except BadInput as exc:
            problems.append(str(exc))
            previous = None
            continue
        found = marker_mismatches(stats, marker)
        for day in stats.dates:
            if previous is not None and day != previous + timedelta(days=1):
                missing = (day - previous).days - 1
                found.append(f"gap: {missing} day(s) missing between {previous} and {day}")
            previous = day
        if found:
            problems.append(f"{path}: " + "; ".join(found))
        else:
            ok.append(f"ok {path.name}: {len(stats.rows)} rows, last {stats.last_date}")
    if previous is not None and previous != yesterday:
        problems.append(
            f"{files[-1]}: last date is {previous}, expected yesterday "
            f"({yesterday}); run m10-daily-stats"
        )
    return problems, ok


def stats_today(config: Any) -> date:
    """Today in the daily_stats time zone: the day whose eve the newest row must be.

    The host clock, as this only reads this host's files (no database needed) and decides
    nothing: a skewed host sees a false alarm at midnight at worst; --as-of pins the day."""
    from zoneinfo import ZoneInfo

    from m10jobs.jobs.stats.settings import DailyStatsSettings

    return datetime.now(ZoneInfo(config.settings(DailyStatsSettings).timezone)).date()


@admin_command(
    None,
    "postflight",
    help="Check every stats CSV against its .processed marker (sha256, rows, last "
    "date), no missing day, newest row = yesterday.  Exit 0, or 65 naming "
    "each file and mismatch.",
    short_help="Check stats CSVs against their .processed markers.",
    epilog="\b\nExample:\n  m10 postflight --as-of 2026-01-02",
)
@click.option(
    "--log-dir",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Directory of the CSVs (default: log_dir / M10_LOG_DIR).",
)
@click.option(
    "--as-of",
    metavar="YYYY-MM-DD",
    help="Check as if today were this date (the newest row must be the day before).",
)
def postflight(config: Any, log: Any, log_dir: Path | None, as_of: str | None) -> int:
    """Validate the daily stats checkpoint; one line per problem."""
    try:
        today = date.fromisoformat(as_of) if as_of else stats_today(config)
    except ValueError:
        raise click.BadParameter(
            f"{as_of!r} is not a date (YYYY-MM-DD)", param_hint="--as-of"
        ) from None
    problems, ok = check(Path(log_dir or config.log_dir), today - timedelta(days=1))
    for line in ok:
        click.echo(line)
    for p in problems:
        log.error("%s", p)
        click.echo(f"FAIL {p}")
    if problems:
        return ExitCode.DATAERR
    log.info("postflight ok: %d file(s)", len(ok))
    return ExitCode.OK


COMMAND = postflight
