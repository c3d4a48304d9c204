"""Retention task of m10-maintenance (seed: retention_archive.py), lease `retention_cleanup`.

Table policies: rows past their age are deleted in batches; each batch is one
short transaction that DELETEs ... RETURNING the rows as JSON, writes them as a
gzip'd JSON-lines chunk (object storage when M10_R2_BUCKET is set, else
$M10_STATE_DIR/retention-archive), and commits only once the chunk is durable.
A crash loses nothing: an uncommitted batch is still in the table (at worst a
duplicate chunk in the archive), and the next run carries on from there.
File policies delete uploaded fallback files, old stats CSVs and old canary
reports.  One retention_jobs row per policy per run.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m10jobs.edges import files
from m10jobs.edges.queries import query
from m10jobs.errors import DependencyUnavailable, LeaseLost, TaskFailed

if TYPE_CHECKING:
    from m10jobs.config import Config, Section
    from m10jobs.runner import PassContext

DAY = 86400.0
# policy -> default max age in days (the table policies, in the order they run)
TABLE_POLICIES = {"replay_log": 30, "dead_letter_archive": 90, "outbox": 7,
                  "retention_jobs": 180}
FILE_POLICIES = {"fallback_uploads": 7, "canary_reports": 30}
STATS_CSV_MONTHS = 13
STATS_NAME = re.compile(r"^m10_stats_(\d{4})-(\d{2})\.csv$")


class Sink:
    """Where archived chunks go: a local directory, or an S3/R2 bucket."""

    def __init__(self, config: Config, section: Section) -> None:
        self.config = config
        self.day = datetime.now(UTC).strftime("%Y/%m/%d")
        self.bucket = config.r2_bucket
        self.prefix = section.str("archive_prefix", "retention/")
        self.dir = Path(section.get("archive_dir", "") or config.state_dir / "retention-archive")
        self._s3: Any = None

    def location(self, policy: str) -> str:
        if self.bucket:
            return f"s3://{self.bucket}/{self.prefix}{policy}/{self.day}/"
        return str(self.dir / policy / self.day) + "/"

    def put(self, policy: str, name: str, data: bytes) -> None:
        """Store a chunk durably (the caller commits its DELETE only afterwards)."""
        if self.bucket:
            if self._s3 is None:
                from m10jobs.edges import storage

                self._s3 = storage.client(self.config)
            self._s3.put_object(Bucket=self.bucket, Key=f"{self.prefix}{policy}/{self.day}/{name}",
                                Body=data, ContentType="application/gzip")
        else:
            files.atomic_write(self.dir / policy / self.day / name, data, mode=0o640)


@dataclass
class Outcome:
    archived: int = 0
    deleted: int = 0
    batches: int = 0
    longest_txn_s: float = 0.0


def purge_table(ctx: PassContext, policy: str, job_id: int, cutoff: datetime, sink: Sink,
                batch_size: int) -> Outcome:
    """Keyset batches (id > last batch's upper id), so no batch rescans the dead index
    entries of the ones before it; a new run starts from id 0 again, which resumes it.
    PostgreSQL renders the JSON and streams it with COPY: no per-row Python work."""
    out = Outcome()
    after = 0
    while True:
        ctx.check()
        t0 = time.monotonic()
        args = {"cutoff": cutoff, "limit": batch_size, "after": after}
        with ctx.conn.transaction(), ctx.conn.cursor() as cur:
            upto = cur.execute(query(f"retention_upto_{policy}"), args).fetchone()["upto"]
            if upto is not None:
                buf = bytearray()
                with cur.copy(query(f"retention_copy_{policy}"), {**args, "upto": upto}) as cp:
                    for data in cp:
                        buf += data
                # COPY text format doubles backslashes; JSON text has no other escapes.
                lines = bytes(buf).replace(b"\\\\", b"\\")
                n = lines.count(b"\n")
                if n:
                    sink.put(policy, f"{policy}-{after + 1:012d}-{upto:012d}.jsonl.gz",
                             gzip.compress(lines, compresslevel=1))
                    cur.execute(query("retention_progress"), {"id": job_id, "archived": n,
                                                              "deleted": n})
                    ctx.fence(cur)
        out.longest_txn_s = max(out.longest_txn_s, time.monotonic() - t0)
        if upto is None:
            return out
        after = upto
        out.archived += n
        out.deleted += n
        out.batches += 1


# -- file policies -------------------------------------------------------------
def _old(path: Path, cutoff_ts: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff_ts
    except FileNotFoundError:
        return False


def fallback_candidates(ctx: PassContext, cutoff_ts: float) -> Iterator[list[Path]]:
    """Uploaded fallback files behind a verified marker: [file, meta, marker], marker last.
    A marker that does not parse or match is never trusted to delete the only copy: the
    entry stays for m10-retry-r2-fallbacks to verify again."""
    from m10jobs.edges import fallback

    for entry in fallback.entries(ctx.config.state_dir / "fallback-uploads"):
        if not os.path.lexists(entry.uploaded_path) or not _old(entry.uploaded_path,
                                                                  cutoff_ts):
            continue
        problem = fallback.marker_problem(entry)
        if problem is not None:
            ctx.log.warning("fallback %s kept: %s", entry.path.name, problem)
            continue
        yield [entry.path, entry.meta_path, entry.uploaded_path]


def stats_candidates(config: Config, months: int) -> Iterator[list[Path]]:
    """Stats CSVs whose month ended more than `months` months ago, marker last."""
    now = datetime.now(UTC)
    limit = now.year * 12 + now.month - 1 - months
    base = config.log_dir
    for csv in sorted(base.glob("m10_stats_*.csv")) if base.is_dir() else ():
        m = STATS_NAME.match(csv.name)
        if m and int(m[1]) * 12 + int(m[2]) - 1 < limit:
            yield [csv, csv.with_name(csv.name + ".processed")]


def canary_candidates(config: Config, cutoff_ts: float) -> Iterator[list[Path]]:
    base = config.state_dir / "canary" / "reports"
    for p in sorted(base.iterdir()) if base.is_dir() else ():
        if (p.is_file() and p.name != "latest_report.json" and not p.name.startswith(".")
                and _old(p, cutoff_ts)):
            yield [p]


def purge_files(ctx: PassContext, policy: str, groups: Iterator[list[Path]], sink: Sink,
                archive: bool, job_id: int) -> Outcome:
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
        ctx.conn.execute(query("retention_progress"),
                         {"id": job_id, "archived": int(archive), "deleted": len(group)})
    return out


# -- the task ------------------------------------------------------------------
def cleanup(ctx: PassContext) -> dict[str, Any]:
    section = ctx.config.section("retention")
    batch_size = section.int("batch_size", 5000, min=1, max=100000)
    sink = Sink(ctx.config, section)
    plans: list[tuple[str, str, float, Callable[[int, datetime], Outcome] | None]] = []

    def age(policy: str, default: float) -> float | None:
        sub = section.table(policy)
        if not sub.bool("enabled", True):
            return None
        return float(sub.int("max_age_days", int(default), min=0)) * DAY

    for policy, days in TABLE_POLICIES.items():
        secs = age(policy, days)
        if secs is not None:
            plans.append((policy, f"m10_recovery.{policy}", secs,
                          lambda jid, cut, p=policy: purge_table(ctx, p, jid, cut, sink,
                                                                 batch_size)))
    now = time.time()
    file_plans: list[tuple[str, str, float, Callable[[], Iterator[list[Path]]], bool]] = []
    secs = age("fallback_uploads", FILE_POLICIES["fallback_uploads"])
    if secs is not None:
        file_plans.append(("fallback_uploads",
                           str(ctx.config.state_dir / "fallback-uploads" / "*.uploaded"), secs,
                           lambda s=secs: fallback_candidates(ctx, now - s), False))
    stats = section.table("stats_csv")
    if stats.bool("enabled", True):
        months = stats.int("max_age_months", STATS_CSV_MONTHS, min=1)
        file_plans.append(("stats_csv", str(ctx.config.log_dir / "m10_stats_*.csv"),
                           months * 31 * DAY, lambda m=months: stats_candidates(ctx.config, m),
                           True))
    secs = age("canary_reports", FILE_POLICIES["canary_reports"])
    if secs is not None:
        file_plans.append(("canary_reports", str(ctx.config.state_dir / "canary" / "reports"),
                           secs, lambda s=secs: canary_candidates(ctx.config, now - s), True))

    if ctx.dry_run:
        would: dict[str, int] = {}
        for policy, _, secs, _ in plans:
            would[policy] = ctx.conn.execute(query(f"retention_count_{policy}"),
                                             {"max_age_s": secs}).fetchone()["n"]
        for policy, _, _, groups, _ in file_plans:
            would[policy] = sum(1 for _ in groups())
        return {"would_delete": would, "archive": sink.location("<policy>")}

    for r in ctx.conn.execute(query("retention_interrupted"), {"run_id": ctx.run_id}):
        ctx.log.warning("retention run %s (policy %s) was interrupted; resuming its work",
                        r["run_id"], r["policy"])
    results: dict[str, Any] = {}
    failures: list[str] = []
    longest = 0.0
    every = [(p, t, s, fn) for p, t, s, fn in plans] + [
        (p, t, s, lambda jid, cut, g=g, a=a, p=p: purge_files(ctx, p, g(), sink, a, jid))
        for p, t, s, g, a in file_plans]
    for policy, target, secs, fn in every:
        t0 = time.monotonic()
        job = ctx.conn.execute(query("retention_start"), {
            "run_id": ctx.run_id, "policy": policy, "target": target, "max_age_s": secs,
            "archive_location": sink.location(policy)}).fetchone()
        try:
            assert fn is not None
            out = fn(job["id"], job["cutoff"])
        except BaseException as exc:
            from m10jobs.edges import db

            with contextlib.suppress(Exception):
                ctx.conn.execute(query("retention_finish"), {
                    "id": job["id"], "status": "failed", "error": str(exc)[:500]})
            if (not isinstance(exc, Exception) or db.is_connection_error(exc)
                    or isinstance(exc, LeaseLost | DependencyUnavailable)):
                raise
            from m10jobs.runner import as_m10_error

            if isinstance(as_m10_error(exc, None), DependencyUnavailable):
                raise  # object storage down: 69, like any other dependency
            ctx.log.error("retention policy %s failed: %s", policy, exc)
            failures.append(policy)
            continue
        ctx.conn.execute(query("retention_finish"), {"id": job["id"], "status": "succeeded",
                                                     "error": None})
        longest = max(longest, out.longest_txn_s)
        results[policy] = {"archived": out.archived, "deleted": out.deleted,
                           "seconds": round(time.monotonic() - t0, 3)}
        ctx.gauge("m10_retention_rows_deleted", out.deleted, "Rows/files deleted by retention.",
                  policy=policy)
    ctx.gauge("m10_retention_longest_txn_seconds", longest,
              "Longest single retention batch transaction.")
    if failures:
        raise TaskFailed(f"retention policies failed: {', '.join(failures)} (see the log and "
                         "`m10 retention history`); the others ran")
    return {"policies": results, "longest_txn_s": round(longest, 3),
            "archive": sink.location("<policy>")}
