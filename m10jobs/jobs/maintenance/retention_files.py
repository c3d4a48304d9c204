"""Retention's file policies (task retention_files, host-local): this host's uploaded
fallback files, old stats CSVs and old canary reports, each group deleted marker last
(archived first when the policy says so), under the lease `retention_cleanup@<host>`.
The table policies and the bookkeeping both share are in retention.py.
"""

from __future__ import annotations

import functools
import gzip
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m10jobs.edges import db, fallback, files
from m10jobs.edges.queries import query
from m10jobs.jobs.canary.report import LATEST, reports_dir
from m10jobs.jobs.maintenance.retention import (
    DAY,
    Outcome,
    Plan,
    Sink,
    fail_on,
    policy_age,
    run_plans,
)
from m10jobs.jobs.maintenance.settings import RetentionSettings
from m10jobs.jobs.stats.statsfile import NAME, marker_path

if TYPE_CHECKING:
    from m10jobs.config import Config
    from m10jobs.runner import PassContext

FILE_POLICIES = ("fallback_uploads", "stats_csv", "canary_reports")


def _old(path: Path, cutoff_ts: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff_ts
    except FileNotFoundError:
        return False


def fallback_candidates(ctx: PassContext, cutoff_ts: float) -> Iterator[list[Path]]:
    """Uploaded fallback files behind a verified marker: [file, meta, marker], marker last.
    A marker that does not parse or match is never trusted to delete the only copy: the
    entry stays for m10-retry-r2-fallbacks to verify again."""
    for entry in fallback.entries(fallback.fallback_dir(ctx.config)):
        if not os.path.lexists(entry.uploaded_path) or not _old(entry.uploaded_path, cutoff_ts):
            continue
        problem = fallback.marker_problem(entry)
        if problem is not None:
            ctx.log.warning("fallback %s kept: %s", entry.path.name, problem)
            continue
        yield [entry.path, entry.meta_path, entry.uploaded_path]


def stats_candidates(config: Config, months: int, now: datetime) -> Iterator[list[Path]]:
    """Stats CSVs whose month ended more than `months` months ago (by `now`, the database
    clock m10-daily-stats' export counts months by too, so a skewed host never deletes a
    month the export writes again), marker last."""
    limit = now.year * 12 + now.month - 1 - months
    base = config.log_dir
    for csv in sorted(base.glob("m10_stats_*.csv")) if base.is_dir() else ():
        m = NAME.match(csv.name)
        if m and int(m[1]) * 12 + int(m[2]) - 1 < limit:
            yield [csv, marker_path(csv)]


def canary_candidates(config: Config, cutoff_ts: float) -> Iterator[list[Path]]:
    base = reports_dir(config.state_dir)
    for p in sorted(base.iterdir()) if base.is_dir() else ():
        if p.is_file() and p.name != LATEST and not p.name.startswith(".") and _old(p, cutoff_ts):
            yield [p]


def purge_files(
    ctx: PassContext,
    policy: str,
    groups: Iterator[list[Path]],
    sink: Sink,
    archive: bool,
    job_id: int,
) -> Outcome:
    """Delete each group of files (archiving the first when asked), marker last, so an
    interrupted group is found again by the next run."""
    out = Outcome()
    for group in groups:
        ctx.check()
        with files.file_lock(group[0]):
            if archive and os.path.lexists(group[0]):
                # Through the safe reader: a planted symlink is refused (the policy fails
                # naming it), never archived with its target's content.
                data = files.read_bytes(group[0], files.ARCHIVED) or b""
                sink.put(policy, group[0].name + ".gz", gzip.compress(data, compresslevel=6))
                out.archived += 1
            for p in group:
                try:
                    p.unlink()
                    out.deleted += 1
                except FileNotFoundError:
                    pass
        ctx.conn.execute(
            query("retention_progress"),
            {"id": job_id, "archived": int(archive), "deleted": len(group)},
        )
    return out


def cleanup_files(ctx: PassContext) -> dict[str, Any]:
    """The file policies (task retention_files, host-local: each host's own log_dir and
    state_dir, so every host runs it under `retention_cleanup@<host>`)."""
    s = ctx.config.settings(RetentionSettings)
    sink = Sink(ctx.config, s)
    host = f"{ctx.config.host}:"
    # File ages are compared with the mtimes this host's own clock stamped: the host clock
    # is the right one for them (a skew shifts both sides alike).
    now = time.time()
    file_plans: list[tuple[str, str, float, Callable[[], Iterator[list[Path]]], bool]] = []
    secs = policy_age(s, "fallback_uploads")
    if secs is not None:
        file_plans.append(
            (
                "fallback_uploads",
                str(ctx.config.state_dir / "fallback-uploads" / "*.uploaded"),
                secs,
                functools.partial(fallback_candidates, ctx, now - secs),
                False,
            )
        )
    if s.stats_csv.enabled:
        months = s.stats_csv.max_age_months
        file_plans.append(
            (
                "stats_csv",
                str(ctx.config.log_dir / "m10_stats_*.csv"),
                months * 31 * DAY,
                lambda: stats_candidates(ctx.config, months, db.now(ctx.conn)),
                True,
            )
        )
    secs = policy_age(s, "canary_reports")
    if secs is not None:
        file_plans.append(
            (
                "canary_reports",
                str(ctx.config.state_dir / "canary" / "reports"),
                secs,
                functools.partial(canary_candidates, ctx.config, now - secs),
                True,
            )
        )
    if ctx.dry_run:
        return {
            "would_delete": {
                policy: sum(1 for _ in groups()) for policy, _, _, groups, _ in file_plans
            },
            "archive": sink.location("<policy>"),
        }

    def purge(
        p: str, g: Callable[[], Iterator[list[Path]]], a: bool
    ) -> Callable[[int, datetime], Outcome]:
        return lambda jid, cut: purge_files(ctx, p, g(), sink, a, jid)

    plans: list[Plan] = [(p, host + t, secs, purge(p, g, a)) for p, t, secs, g, a in file_plans]
    results, _, failures = run_plans(ctx, sink, plans, FILE_POLICIES, host)
    fail_on(failures)
    return {"policies": results, "archive": sink.location("<policy>")}
