"""m10-daily-stats (seed: m10_daily_stats_export.py), daily at 00:05.

Appends one row per missing day to `$M10_LOG_DIR/m10_stats_YYYY-MM.csv`: every
day after the last one in the checkpoint up to yesterday (backfill after
downtime; the first run does yesterday unless --start-date is given).  Days are
computed in SQL in the configured time zone; each month file is rewritten
atomically under its file lock, then its `.processed` marker, then the CSV is
uploaded through the fallback path (a store outage leaves it for
m10-retry-r2-fallbacks, the export still succeeds).  Rerunning never
duplicates a day; a CSV that does not parse stops the pass (65), untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import click

from m10jobs.registry import Flow, Job
from m10jobs.settings import setting

if TYPE_CHECKING:
    from pathlib import Path
    from zoneinfo import ZoneInfo

    from m10jobs.runner import PassContext

MAX_BACKFILL_DAYS = 3660


def _zone_name(name: str) -> str | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "an IANA time zone name such as UTC or Europe/Berlin"
    return None


def _object_prefix(prefix: str) -> str | None:
    from m10jobs.edges import fallback

    try:
        fallback.check_key(prefix + "m10_stats.csv")
    except ValueError as exc:
        return f"an object key prefix ({exc})"
    return None


@dataclass(frozen=True)
class DailyStatsSettings:
    """[daily_stats]: the day boundary and where the month CSVs are uploaded."""

    SECTION: ClassVar[str] = "daily_stats"

    timezone: str = setting("UTC", "IANA zone whose midnight ends a day", check=_zone_name)
    key_prefix: str = setting("m10/stats/", "object key prefix of the uploaded CSVs",
                              check=_object_prefix)
    upload: bool = setting(True, "upload each changed month CSV (needs r2_bucket)")


def _zone(ctx: PassContext) -> ZoneInfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo(ctx.config.settings(DailyStatsSettings).timezone)


def yesterday(tz: ZoneInfo) -> date:
    return datetime.now(tz).date() - timedelta(days=1)


def plan(ctx: PassContext, tz: ZoneInfo) -> list[date]:
    """Days to export (BadInput if a month file they go into is corrupt)."""
    from m10jobs.errors import BadInput
    from m10jobs.statsfile import csv_path, days, month_files, parse

    log_dir = ctx.config.log_dir
    last_possible = yesterday(tz)
    until: date = ctx.params.get("until") or last_possible
    if until > last_possible:
        raise BadInput(f"--until {until} is not a finished day yet (yesterday in "
                       f"{tz.key} is {last_possible})")
    start: date | None = ctx.params.get("start_date")
    parsed = {}
    files = month_files(log_dir)
    last = None
    for path in reversed(files):  # the newest month with a row holds the last date
        parsed[path] = parse(path)
        if parsed[path].last_date:
            last = parsed[path].last_date
            break
    first = start or (last + timedelta(days=1) if last else until)
    if (until - first).days >= MAX_BACKFILL_DAYS:
        raise BadInput(f"refusing to backfill {(until - first).days} days from {first}; "
                       "give a later --start-date")
    todo = []
    for day in days(first, until) if first <= until else []:
        path = csv_path(log_dir, day)
        if path not in parsed:
            parsed[path] = parse(path)
        if day not in set(parsed[path].dates):
            todo.append(day)
    return todo


def compute(ctx: PassContext, day: date, tz: ZoneInfo) -> dict[str, Any]:
    from m10jobs.edges.queries import query

    lo = datetime.combine(day, time(), tz)
    hi = datetime.combine(day + timedelta(days=1), time(), tz)
    row = ctx.conn.execute(query("daily_stats"), {"lo": lo, "hi": hi}).fetchone()
    return {"date": day.isoformat(), **{k: "" if v is None else str(v) for k, v in row.items()}}


def export_pass(ctx: PassContext) -> dict[str, Any]:
    from m10jobs.edges import fallback
    from m10jobs.edges.files import atomic_write, atomic_write_json, file_lock
    from m10jobs.statsfile import csv_path, marker_for, marker_path, month_files, parse, render

    tz = _zone(ctx)
    s = ctx.config.settings(DailyStatsSettings)
    prefix = s.key_prefix
    todo = plan(ctx, tz)
    if ctx.dry_run:
        return {"would_export": [d.isoformat() for d in todo], "timezone": tz.key}
    by_month: dict[Path, list[dict[str, Any]]] = {}
    for day in todo:
        ctx.check()
        by_month.setdefault(csv_path(ctx.config.log_dir, day), []).append(
            compute(ctx, day, tz))
    # A month whose marker is missing (first run, or an operator deleted a stale
    # one after checking the CSV) gets it rewritten even with no new day.
    for path in month_files(ctx.config.log_dir):
        if path not in by_month and not marker_path(path).exists() and parse(path).rows:
            by_month[path] = []
    written, appended = [], []
    for path, new_rows in sorted(by_month.items()):
        ctx.check()
        with file_lock(path):
            current = parse(path)  # again, under the lock: another writer may have been here
            have = {r["date"] for r in current.rows}
            rows = sorted([*current.rows, *(r for r in new_rows if r["date"] not in have)],
                          key=lambda r: r["date"])
            data = render(rows)
            if new_rows:
                atomic_write(path, data)
            atomic_write_json(marker_path(path), marker_for(path, data, rows))
        written.append(path)
        if new_rows:
            appended.append(path)
        ctx.log.info("%s: %d row(s), last %s", path.name, len(rows), rows[-1]["date"],
                     extra={"added": [r["date"] for r in new_rows]})
    uploads = {}
    if appended and s.upload and ctx.config.r2_bucket:
        for path in appended:
            result = fallback.upload(ctx.config, path, prefix + path.name, ctx.log,
                                     "text/csv")
            uploads[path.name] = "stored" if result.stored else "fallback"
    elif appended:
        ctx.log.info("upload skipped (daily_stats.upload is off or r2_bucket is not set)")
    ctx.gauge("m10_daily_stats_days_exported", len(todo), "Days appended by the last pass.")
    files = month_files(ctx.config.log_dir)
    newest = parse(files[-1]).last_date if files else None
    if newest is not None:
        ctx.gauge("m10_daily_stats_last_day_timestamp_seconds",
                  datetime.combine(newest, time(), tz).timestamp(),
                  "Start of the newest day in the stats CSVs (stale when older than 2 days).")
    return {"exported": [d.isoformat() for d in todo], "files": [p.name for p in written],
            "uploads": uploads, "timezone": tz.key}


def _date(ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


JOB = Job(
    script="m10-daily-stats",
    summary="Append missing days to m10_stats_YYYY-MM.csv, write .processed, upload.",
    example="m10-daily-stats --start-date 2026-01-01 --dry-run",
    schedule="*-*-* 00:05:00",
    jitter_seconds=0,  # seed: daily at 00:05
    lock="m10:daily_stats",
    run=export_pass,
    after=("postgresql.service",),
    options=(
        click.Option(["--start-date"], metavar="YYYY-MM-DD", callback=_date,
                     help="First day to export (default: the day after the checkpoint's "
                          "last, or yesterday on a first run); days present are skipped."),
        click.Option(["--until"], metavar="YYYY-MM-DD", callback=_date,
                     help="Last day to export (default: yesterday)."),
    ),
    produces=(
        Flow("checkpoint", "CSV stats files", "$M10_LOG_DIR/m10_stats_YYYY-MM.csv",
             "Daily stats; next day's export resumes after its last date",
             ("m10-daily-stats", "retention_cleanup")),
        Flow("marker", ".processed", "$M10_LOG_DIR/m10_stats_YYYY-MM.csv.processed",
             "Last date, rows and sha256 of the CSV", ("m10 postflight",)),
    ),
    consumes=("m10_recovery.outbox", "m10_recovery.dead_letter_archive",
              "m10_recovery.retention_jobs"),
    settings=(DailyStatsSettings,),
)
