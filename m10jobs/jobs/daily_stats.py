"""m10-daily-stats (seed: m10_daily_stats_export.py), daily at 00:05.

Appends one row per missing day to `$M10_LOG_DIR/m10_stats_YYYY-MM.csv`: every
day after the last one in the checkpoint up to yesterday (backfill after
downtime; the first run does yesterday unless --start-date is given).  Days are
computed in SQL in the configured time zone; each month file is rewritten
atomically under its file lock, then its `.processed` marker (which records
the CSV's sha256 and whether it is still owed to object storage), then every
owed CSV is uploaded through the fallback path (a store outage leaves it for
m10-retry-r2-fallbacks, the export still succeeds).  Rerunning never
duplicates a day.  Every pair is checked before anything is written: a marker
behind its CSV (killed between the renames) is rebuilt; a corrupt or edited
month the new days go into stops the pass (65), untouched; any other bad month
is reported and skipped (exit 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import click

from m10jobs.registry import Flow, Job
from m10jobs.settings import setting
from m10jobs.statsfile import StatsFile, marker_path, render

if TYPE_CHECKING:
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


@dataclass
class Month:
    """One month's file pair as found on disk, before this pass changes anything."""

    path: Path
    stats: StatsFile | None = None
    marker: dict[str, Any] | None = None
    problem: str | None = None  # corrupt CSV or marker, or a marker the CSV does not explain
    behind: bool = False  # the CSV is the marker's plus appended days (a crash between renames)


def survey(log_dir: Path) -> dict[Path, Month]:
    """Every month file with its marker, checked: nothing is written before this."""
    import hashlib

    from m10jobs.edges import files
    from m10jobs.errors import BadInput
    from m10jobs.statsfile import explains, month_files, parse, read_marker

    months = {}
    for path in month_files(log_dir):
        m = months[path] = Month(path)
        try:
            m.stats = parse(path)
            m.marker = read_marker(path)
        except BadInput as exc:
            m.problem = str(exc)
            continue
        if m.marker is None or not m.stats.rows:
            continue
        raw = files.read_bytes(path, files.STATS_CSV) or b""  # the bytes, as postflight sees them
        if hashlib.sha256(raw).hexdigest() == m.marker["sha256"]:
            continue
        if explains(m.marker, m.stats.rows):
            m.behind = True
        else:
            m.problem = (f"{path}: its marker {marker_path(path).name} does not match it "
                         f"(the CSV has {len(m.stats.rows)} rows, the marker says "
                         f"{m.marker['rows']}; edited after export?); check the CSV, then move "
                         "the marker aside so the next run rebuilds it from the CSV")
    return months


def plan(ctx: PassContext, tz: ZoneInfo, months: dict[Path, Month]) -> list[date]:
    """Days to export; BadInput if the month that holds the checkpoint, or one they
    go into, is bad (nothing is written then)."""
    from m10jobs.errors import BadInput
    from m10jobs.statsfile import csv_path, days

    log_dir = ctx.config.log_dir
    last_possible = yesterday(tz)
    until: date = ctx.params.get("until") or last_possible
    if until > last_possible:
        raise BadInput(f"--until {until} is not a finished day yet (yesterday in "
                       f"{tz.key} is {last_possible})")
    start: date | None = ctx.params.get("start_date")
    last = None
    for m in reversed(list(months.values())):  # the newest month with a row holds the last date
        if m.problem and not start:
            raise BadInput(f"{m.problem} (it holds the checkpoint: nothing was exported)")
        if m.stats and m.stats.last_date:
            last = m.stats.last_date
            break
    first = start or (last + timedelta(days=1) if last else until)
    if (until - first).days >= MAX_BACKFILL_DAYS:
        raise BadInput(f"refusing to backfill {(until - first).days} days from {first}; "
                       "give a later --start-date")
    todo = []
    for day in days(first, until) if first <= until else []:
        m = months.get(csv_path(log_dir, day))
        if m is not None and m.problem:
            raise BadInput(f"{m.problem} (day {day} goes into it: nothing was exported)")
        if m is None or m.stats is None or day not in set(m.stats.dates):
            todo.append(day)
    return todo


def compute(ctx: PassContext, day: date, tz: ZoneInfo) -> dict[str, Any]:
    from m10jobs.edges.queries import query

    lo = datetime.combine(day, time(), tz)
    hi = datetime.combine(day + timedelta(days=1), time(), tz)
    row = ctx.conn.execute(query("daily_stats"), {"lo": lo, "hi": hi}).fetchone()
    return {"date": day.isoformat(), **{k: "" if v is None else str(v) for k, v in row.items()}}


def export_pass(ctx: PassContext) -> dict[str, Any]:
    from m10jobs.edges.files import atomic_write, atomic_write_json, file_lock
    from m10jobs.errors import TaskFailed
    from m10jobs.statsfile import csv_path, marker_for, parse

    tz = _zone(ctx)
    s = ctx.config.settings(DailyStatsSettings)
    prefix = s.key_prefix
    upload_on = s.upload and bool(ctx.config.r2_bucket)
    months = survey(ctx.config.log_dir)
    bad = [m for m in months.values() if m.problem]
    # From what is on disk now: stays set until the files are fixed.
    ctx.gauge("m10_daily_stats_bad_months", len(bad),
              "Stats months whose CSV or .processed marker is corrupt or does not match.")
    todo = plan(ctx, tz, months)
    repair = [m.path for m in months.values() if not m.problem and m.stats and m.stats.rows
              and (m.marker is None or m.behind)]
    if ctx.dry_run:
        return {"would_export": [d.isoformat() for d in todo], "timezone": tz.key,
                "would_repair_markers": [p.name for p in repair]}
    by_month: dict[Path, list[dict[str, Any]]] = {p: [] for p in repair}
    for day in todo:
        ctx.check()
        by_month.setdefault(csv_path(ctx.config.log_dir, day), []).append(
            compute(ctx, day, tz))
    written, appended = [], []
    for path, new_rows in sorted(by_month.items()):
        ctx.check()
        with file_lock(path):
            current = parse(path)  # again, under the lock: another writer may have been here
            have = {r["date"] for r in current.rows}
            rows = sorted([*current.rows, *(r for r in new_rows if r["date"] not in have)],
                          key=lambda r: r["date"])
            data = render(rows)
            if len(rows) > len(current.rows) or path in repair:
                atomic_write(path, data)  # (a repaired month: in its canonical form)
            # A marker behind its CSV (killed between the two renames) is rebuilt, and
            # the CSV it did not cover is owed to object storage.
            atomic_write_json(marker_path(path), marker_for(path, data, rows,
                                                            upload_pending=upload_on))
        written.append(path)
        if path in repair:
            ctx.log.warning("%s: marker rebuilt from the CSV (it was missing or behind, e.g. "
                            "a run was killed between the CSV and its marker)", path.name)
        if new_rows:
            appended.append(path)
        ctx.log.info("%s: %d row(s), last %s", path.name, len(rows), rows[-1]["date"],
                     extra={"added": [r["date"] for r in new_rows]})
    uploads, failed = _upload_pending(ctx, prefix) if upload_on else ({}, [])
    if appended and not upload_on:
        ctx.log.info("upload skipped (daily_stats.upload is off or r2_bucket is not set)")
    ctx.gauge("m10_daily_stats_days_exported", len(todo), "Days appended by the last pass.")
    summary = {"exported": [d.isoformat() for d in todo], "files": [p.name for p in written],
               "uploads": uploads, "timezone": tz.key}
    problems = [m.problem for m in bad] + failed
    for problem in problems:
        ctx.log.error("%s", problem)
    if problems:
        raise TaskFailed(f"{len(problems)} stats month(s) need attention, the others were "
                         f"exported: {problems[0]}", summary)
    return summary


def _upload_pending(ctx: PassContext, prefix: str) -> tuple[dict[str, str], list[str]]:
    """Upload every month whose marker says it is owed to object storage, then clear
    that in the marker.  The flag lives in the marker, so a month written while the
    store was down and the state disk full (no fallback copy possible) is uploaded on
    a later run instead of never."""
    import hashlib

    from m10jobs.edges import fallback
    from m10jobs.edges.files import atomic_write_json, file_lock
    from m10jobs.errors import M10Error
    from m10jobs.statsfile import marker_for, month_files, parse, read_marker

    uploads: dict[str, str] = {}
    failed: list[str] = []
    for path in month_files(ctx.config.log_dir):
        ctx.check()
        try:
            marker = read_marker(path)
        except M10Error:
            continue  # reported by survey
        if not marker or not marker.get("upload_pending"):
            continue
        try:
            result = fallback.upload(ctx.config, path, prefix + path.name, ctx.log, "text/csv")
        except (OSError, M10Error) as exc:
            failed.append(f"{path}: upload failed and could not be kept for retry ({exc}); it "
                          "stays pending and is retried on the next run")
            continue
        uploads[path.name] = "stored" if result.stored else "fallback"
        with file_lock(path):
            stats = parse(path)
            data = render(stats.rows)
            now = read_marker(path)
            if now and now["sha256"] == hashlib.sha256(data).hexdigest() == marker["sha256"]:
                atomic_write_json(marker_path(path), marker_for(path, data, stats.rows))
    ctx.gauge("m10_daily_stats_uploads_pending", len(failed),
              "Stats months still owed to object storage.")
    return uploads, failed


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
             ("m10-daily-stats", "retention")),
        Flow("marker", ".processed", "$M10_LOG_DIR/m10_stats_YYYY-MM.csv.processed",
             "Last date, rows and sha256 of the CSV", ("m10 postflight",)),
    ),
    consumes=("m10_recovery.outbox", "m10_recovery.dead_letter_archive",
              "m10_recovery.retention_jobs"),
    settings=(DailyStatsSettings,),
)
