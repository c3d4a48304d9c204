"""m10-daily-stats (seed: m10_daily_stats_export.py), daily at 00:05.

Two tasks, because on several hosts the figures are cluster state and the
files are host state:

* `compute` (cluster lease `m10:daily_stats`): every day after the last one in
  `m10_recovery.daily_stats` up to yesterday (backfill after downtime; the first
  run does yesterday, or resumes after this host's CSVs, or --start-date) is
  computed in SQL in the configured time zone and stored, fenced.  A day whose
  source rows retention may already have deleted is refused (65): its figures
  would be zeros or undercounts, so nothing is computed.
* `export` (host-local lease `m10:daily_stats@<host>`): this host's
  `$M10_LOG_DIR/m10_stats_YYYY-MM.csv` files are brought in line with the table
  (every month retention keeps), each rewritten atomically under its file lock,
  then its `.processed` marker, then uploaded through the fallback path.  So
  every host's CSVs hold every day whichever host computed it.  If another
  host is computing right now, export waits for it (bounded), else exits 75.

Rerunning never duplicates a day.  A month's CSV (or marker) that does not parse
is reported and left untouched, and the other months proceed: exit 1 when some
month was written or uploaded besides, 65 when the bad ones were all there was.
"""

from __future__ import annotations

import hashlib
import os
import stat
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from m10jobs.edges import db, fallback, files
from m10jobs.edges.files import atomic_write, atomic_write_json, file_lock
from m10jobs.edges.lease import StillHeld, live_holder, wait_until_free
from m10jobs.edges.queries import one, query
from m10jobs.errors import BadInput, M10Error, TaskFailed, some_refused
from m10jobs.jobs.maintenance.settings import RetentionSettings
from m10jobs.jobs.stats.settings import LOCK, DailyStatsSettings
from m10jobs.jobs.stats.statsfile import (
    COLUMNS,
    csv_path,
    days,
    marker_for,
    marker_path,
    month_files,
    parse,
    read_marker,
    render,
)

if TYPE_CHECKING:
    from pathlib import Path

    from m10jobs.runner import PassContext

MAX_BACKFILL_DAYS = 3660


def _zone(ctx: PassContext) -> ZoneInfo:
    return ZoneInfo(ctx.config.settings(DailyStatsSettings).timezone)


def yesterday(ctx: PassContext, tz: ZoneInfo) -> date:
    """The last finished day in the configured zone, by the database clock: a host whose
    clock runs ahead (an hour is enough at the 00:05 timer) must not compute, and store
    for good, the day the database is still in."""
    return db.now(ctx.conn).astimezone(tz).date() - timedelta(days=1)


def _until(ctx: PassContext, tz: ZoneInfo) -> date:
    last_possible = yesterday(ctx, tz)
    until: date = ctx.params.get("until") or last_possible
    if until > last_possible:
        raise BadInput(
            f"--until {until} is not a finished day yet (yesterday in {tz.key} is {last_possible})"
        )
    return until


def _bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    return (
        datetime.combine(day, time(), tz),
        datetime.combine(day + timedelta(days=1), time(), tz),
    )


def _csv_last_date(ctx: PassContext) -> date | None:
    """The last day in this host's CSVs: where a first compute resumes after an upgrade
    from the CSV-only checkpoint."""
    for path in reversed(month_files(ctx.config.log_dir)):
        try:
            last = parse(path).last_date
        except BadInput:
            continue  # a damaged month: resume after an earlier one (days are never doubled)
        if last:
            return last
    return None


def plan(ctx: PassContext, tz: ZoneInfo) -> list[date]:
    """Days to compute: not yet in the table, within [first, until]."""
    until = _until(ctx, tz)
    start: date | None = ctx.params.get("start_date")
    if start is None:
        last = one(ctx.conn.execute(query("stats_last_day")))["last"] or _csv_last_date(ctx)
        start = last + timedelta(days=1) if last else until
    if (until - start).days >= MAX_BACKFILL_DAYS:
        raise BadInput(
            f"refusing to backfill {(until - start).days} days from {start}; "
            "give a later --start-date"
        )
    if start > until:
        return []
    have = {
        r["day"]
        for r in ctx.conn.execute(query("stats_days_between"), {"first": start, "last": until})
    }
    return [d for d in days(start, until) if d not in have]


def refuse_unretained(ctx: PassContext, todo: list[date], tz: ZoneInfo) -> None:
    """BadInput (65, nothing computed) when a day starts before what retention kept:
    its figures would silently be zeros or undercounts."""
    since = one(ctx.conn.execute(query("stats_retained_since")))["since"]
    if since is None or not todo or _bounds(todo[0], tz)[0] >= since:
        return
    first_ok = since.astimezone(tz).date()
    if _bounds(first_ok, tz)[0] < since:
        first_ok += timedelta(days=1)
    lost = [d for d in todo if _bounds(d, tz)[0] < since]
    more = f" (and {len(lost) - 1} more up to {lost[-1]})" if len(lost) > 1 else ""
    raise BadInput(
        f"day {lost[0]}{more} is older than "
        f"the data it is computed from: retention deleted rows created before "
        f"{since.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}, so it would be written as "
        f"zeros; nothing was computed. Days already computed are kept in "
        f"m10_recovery.daily_stats; rerun with --start-date {first_ok} or later"
    )


def compute(ctx: PassContext, day: date, tz: ZoneInfo) -> dict[str, Any]:
    lo, hi = _bounds(day, tz)
    row = one(ctx.conn.execute(query("daily_stats"), {"lo": lo, "hi": hi}))
    return {"day": day, **row}


def compute_pass(ctx: PassContext) -> dict[str, Any]:
    """Cluster-wide: compute and store the missing days (fenced, all or nothing)."""
    tz = _zone(ctx)
    todo = plan(ctx, tz)
    refuse_unretained(ctx, todo, tz)
    if ctx.dry_run:
        return {"would_compute": [d.isoformat() for d in todo], "timezone": tz.key}
    computed = []
    for day in todo:
        ctx.check()
        computed.append(compute(ctx, day, tz))
    if computed:
        assert ctx.lease is not None
        with ctx.conn.transaction(), ctx.conn.cursor() as cur:
            ctx.fence(cur)
            cur.executemany(
                query("stats_store_day"),
                [
                    {**row, "timezone": tz.key, "host": ctx.config.host, "token": ctx.lease.token}
                    for row in computed
                ],
            )
    ctx.gauge("m10_daily_stats_days_computed", len(todo), "Days computed by the last pass.")
    return {"computed": [d.isoformat() for d in todo], "timezone": tz.key}


def _export_window(ctx: PassContext, tz: ZoneInfo) -> tuple[date, date]:
    """[first, last] day whose month this host's CSVs hold: every month retention keeps
    (from the first of the month it keeps), and any --start-date asked for."""
    until = _until(ctx, tz)
    kept = ctx.config.settings(RetentionSettings).stats_csv
    months = kept.max_age_months if kept.enabled else None
    now = db.now(ctx.conn)  # the clock retention's stats_csv policy counts months by
    index = now.year * 12 + now.month - 1 - (months if months is not None else 12 * 10)
    first = date(index // 12, index % 12 + 1, 1)
    start: date | None = ctx.params.get("start_date")
    return (min(first, start.replace(day=1)) if start else first), until


def _wait_for_compute(ctx: PassContext, last: date, have_last: bool) -> None:
    """Another host computing right now (the timers fire together): wait for it, bounded,
    so this host's CSV gets the day it is adding; still busy -> skipped (75)."""
    wait_s = ctx.config.settings(DailyStatsSettings).compute_wait_seconds
    if have_last or ctx.dry_run or live_holder(ctx.conn, LOCK) is None:
        return
    ctx.log.info(
        "%s is not computed yet and %s is held; waiting up to %ss for it", last, LOCK, wait_s
    )
    holder = wait_until_free(ctx.conn, LOCK, wait_s, ctx.check)
    if holder is not None:
        raise StillHeld(
            LOCK, holder, wait_s, f"{last} is not computed yet while another host computes"
        )


def _refuse_odd_marker(path: Path) -> None:
    """BadInput (65) when a directory, FIFO or symlink sits where the month's marker
    goes: the marker write would fail after the CSV was rewritten, or replace something
    nobody meant to.  Checked for every month to write before anything is written."""
    mp = marker_path(path)
    if os.path.lexists(mp) and not stat.S_ISREG(os.lstat(mp).st_mode):
        files.read_bytes(mp, files.STATS_MARKER)  # raises BadInput saying what it is


def _marker_stale(path: Path) -> bool:
    """The month's marker is missing or does not describe the CSV as it is (a crash
    between the CSV's rename and the marker's): it is rewritten, so the pair heals."""
    try:
        marker = read_marker(path)
    except BadInput:  # torn or damaged: it only describes the CSV, so write it again
        return True
    if marker is None:
        return True
    data = files.read_bytes(path, files.STATS_CSV, missing_ok=True) or b""
    described = {k: v for k, v in marker.items() if k != "upload_pending"}
    return described != {
        k: v for k, v in marker_for(path, data, parse(path).rows).items() if k != "upload_pending"
    }


def _check_month(path: Path) -> list[dict[str, str]]:
    """The month's rows; BadInput when its CSV does not parse or its marker's place is
    taken by something odd (the month is then left alone, and reported)."""
    rows = parse(path).rows
    _refuse_odd_marker(path)
    return rows


def export_pass(ctx: PassContext) -> dict[str, Any]:
    """Host-local: bring this host's month files in line with the table, then upload."""
    tz = _zone(ctx)
    s = ctx.config.settings(DailyStatsSettings)
    upload_on = s.upload and bool(ctx.config.r2_bucket)
    first, last = _export_window(ctx, tz)

    def fetch() -> list[dict[str, Any]]:
        return ctx.conn.execute(
            query("stats_rows_since"), {"first": first, "last": last}
        ).fetchall()

    stored = fetch()
    _wait_for_compute(ctx, last, bool(stored) and stored[-1]["day"] == last)
    stored = fetch()
    by_month: dict[Path, dict[str, dict[str, str]]] = {}
    for r in stored:
        row = {
            "date": r["day"].isoformat(),
            **{c: "" if r[c] is None else str(r[c]) for c in COLUMNS[1:]},
        }
        by_month.setdefault(csv_path(ctx.config.log_dir, r["day"]), {})[row["date"]] = row
    # Every month on its own: one that does not parse is reported and skipped.
    current: dict[Path, list[dict[str, str]]] = {}
    bad: dict[Path, str] = {}
    for path in sorted(set(month_files(ctx.config.log_dir)) | set(by_month)):
        try:
            current[path] = _check_month(path)
        except BadInput as exc:
            bad[path] = str(exc)
            ctx.log.error("%s; this month is skipped, the others proceed", exc)
    for path, rows in current.items():  # a month's marker may be stale
        if path not in by_month and rows and _marker_stale(path):
            by_month[path] = {}
    changes = {}
    for path, fresh in sorted(by_month.items()):
        if path in bad:
            continue
        have = {r["date"]: r for r in current[path]}
        added = sorted(d for d in fresh if have.get(d) != fresh[d])
        if added or _marker_stale(path):
            changes[path] = added
    ctx.gauge(
        "m10_daily_stats_bad_months",
        len(bad),
        "Stats months whose CSV or marker does not parse (skipped until fixed).",
    )
    if ctx.dry_run:
        return {
            "would_write": {p.name: a for p, a in changes.items()},
            "bad": [p.name for p in bad],
            "timezone": tz.key,
        }
    written, appended = [], []
    for path, added in changes.items():
        ctx.check()
        with file_lock(path):
            on_disk = parse(path)  # again, under the lock: another writer may have been here
            merged = {r["date"]: r for r in on_disk.rows} | by_month[path]
            rows = [merged[d] for d in sorted(merged)]
            data = render(rows)
            if added:
                atomic_write(path, data)
            # upload_pending: the CSV is owed to object storage until stored (or kept as a
            # fallback copy); in the marker, so it survives a failed run or a full disk.
            atomic_write_json(
                marker_path(path),
                marker_for(
                    path, data, rows, upload_pending=upload_on and (bool(added) or _owed(path))
                ),
            )
        written.append(path)
        if added:
            appended.append(path)
        ctx.log.info(
            "%s: %d row(s), last %s", path.name, len(rows), rows[-1]["date"], extra={"added": added}
        )
    uploads, failed = _upload_pending(ctx, s.key_prefix, bad) if upload_on else ({}, [])
    if appended and not upload_on:
        ctx.log.info("upload skipped (daily_stats.upload is off or r2_bucket is not set)")
    exported = sorted(d for a in changes.values() for d in a)
    ctx.gauge(
        "m10_daily_stats_days_exported",
        len(exported),
        "Days written into this host's CSVs by the last pass.",
    )
    months = [p for p in month_files(ctx.config.log_dir) if p not in bad]
    newest = parse(months[-1]).last_date if months else None
    if newest is not None:
        ctx.gauge(
            "m10_daily_stats_last_day_timestamp_seconds",
            datetime.combine(newest, time(), tz).timestamp(),
            "Start of the newest day in this host's stats CSVs (stale when older than 2 days).",
        )
    summary: dict[str, Any] = {
        "exported": exported,
        "files": [p.name for p in written],
        "uploads": uploads,
        "timezone": tz.key,
    }
    if bad:
        summary["bad"] = [p.name for p in bad]
        raise some_refused(
            f"{len(bad)} stats month(s) refused and left untouched ({next(iter(bad.values()))})",
            summary,
            nothing="nothing else to write",
            others="the other months were written" if written or uploads else None,
        )
    if failed:
        for problem in failed:
            ctx.log.error("%s", problem)
        raise TaskFailed(
            f"{len(failed)} stats month(s) still owed to object storage: {failed[0]}", summary
        )
    return summary


def _owed(path: Path) -> bool:
    """The month's marker says its CSV has not reached object storage yet."""
    try:
        marker = read_marker(path)
    except BadInput:
        return True
    return bool(marker and marker.get("upload_pending"))


def _upload_pending(
    ctx: PassContext, prefix: str, bad: dict[Path, str]
) -> tuple[dict[str, str], list[str]]:
    """Upload every month whose marker says it is owed to object storage, then clear
    that in the marker.  The flag lives in the marker, so a month written while the
    store was down and the state disk full (no fallback copy possible) is uploaded on
    a later run instead of never."""
    uploads: dict[str, str] = {}
    failed: list[str] = []
    for path in month_files(ctx.config.log_dir):
        ctx.check()
        if path in bad:  # never upload a month that does not parse
            continue
        try:
            marker = read_marker(path)
        except M10Error:
            continue
        if not marker or not marker.get("upload_pending"):
            continue
        try:
            result = fallback.upload(ctx.config, path, prefix + path.name, ctx.log, "text/csv")
        except (OSError, M10Error) as exc:
            failed.append(
                f"{path}: upload failed and could not be kept for retry ({exc}); it "
                "stays pending and is retried on the next run"
            )
            continue
        uploads[path.name] = "stored" if result.stored else "fallback"
        with file_lock(path):
            stats = parse(path)
            data = render(stats.rows)
            now = read_marker(path)
            if now and now["sha256"] == hashlib.sha256(data).hexdigest() == marker["sha256"]:
                atomic_write_json(marker_path(path), marker_for(path, data, stats.rows))
    ctx.gauge(
        "m10_daily_stats_uploads_pending", len(failed), "Stats months still owed to object storage."
    )
    return uploads, failed
