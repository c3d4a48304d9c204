"""Retention tasks of m10-maintenance (seed: retention_archive.py): the table policies'
batch engine and the bookkeeping both tasks share (chunks.py: the chunk format;
retention_files.py: the file policies; edges/pgcopy.py: the COPY reader).

retention_cleanup (lease `retention_cleanup`, cluster-wide) runs the table
policies; retention_files (lease `retention_cleanup@<host>`, host-local) runs the
file policies on every host, since each host's files are its own.

Table policies: rows past their age are deleted in batches (dead-lettered outbox
rows too: dead_letter_archive got a copy when they were dead-lettered); each batch is one
short transaction that streams `COPY (DELETE ... RETURNING t.*) TO STDOUT (FORMAT binary)`,
writes it zstd-compressed as a chunk (object storage when M10_R2_BUCKET is set, else
$M10_STATE_DIR/retention-archive), and commits only once the chunk is durable.  Binary,
not CSV: the send functions cost PostgreSQL less than text output (timestamps above all),
and zstd level 1 costs this process a third of gzip's CPU for a smaller chunk
(docs/maintenance.md has the figures).  A chunk is restorable as it is with
`COPY ... FROM STDIN (FORMAT binary)`; its header extension (which COPY skips) names the
table's columns and types, so `m10 retention show` can print any chunk as CSV.
A crash loses nothing: an uncommitted batch is still in the table (at worst a
duplicate chunk in the archive), and the next run carries on from there.
File policies delete uploaded fallback files, old stats CSVs and old canary
reports.  One retention_jobs row per policy per run; a file policy's target is
`<host>:<path>`, so `m10 retention history` says whose files they were.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m10jobs.edges import db, files
from m10jobs.edges.pgcopy import copy_out
from m10jobs.edges.queries import one, query
from m10jobs.errors import DependencyUnavailable, LeaseLost, TaskFailed
from m10jobs.jobs.maintenance.chunks import CHUNK_SUFFIX, chunk_meta, compress_chunk
from m10jobs.jobs.maintenance.settings import Policy, RetentionSettings
from m10jobs.runner import as_m10_error

if TYPE_CHECKING:
    import psycopg

    from m10jobs.config import Config
    from m10jobs.runner import PassContext

DAY = 86400.0


# (outbox_dead_lettered runs before dead_letter_archive, whose rows record those dead letters.)
TABLE_POLICIES = (
    "replay_log",
    "outbox_dead_lettered",
    "dead_letter_archive",
    "outbox",
    "retention_jobs",
    "job_runs",
)
# policy -> its table, where the two differ
POLICY_TABLES = {"outbox_dead_lettered": "outbox"}
TABLE_TARGET_PREFIX = "m10_recovery."
# table policies whose batches may be spans of the next ids (retention_span_<policy>), while
# every row of a span turns out eligible (the old end of an append-only table); the others,
# and these once a span held a row to keep, find each batch's eligible rows (retention_upto_*)
SPAN_POLICIES = ("replay_log", "dead_letter_archive", "outbox", "retention_jobs", "job_runs")


class Sink:
    """Where archived chunks go: a local directory, or an S3/R2 bucket."""

    def __init__(self, config: Config, s: RetentionSettings) -> None:
        self.config = config
        # Only a folder name for the archived chunks (nothing is decided by it): local.
        self.day = datetime.now(UTC).strftime("%Y/%m/%d")
        self.bucket = config.r2_bucket
        self.prefix = s.archive_prefix
        self.dir = Path(s.archive_dir or config.state_dir / "retention-archive")
        self._s3: Any = None
        self._s3_lock = threading.Lock()  # batches store their chunks from worker threads

    def location(self, policy: str) -> str:
        if self.bucket:
            return f"s3://{self.bucket}/{self.prefix}{policy}/{self.day}/"
        return str(self.dir / policy / self.day) + "/"

    def put(self, policy: str, name: str, data: bytes) -> None:
        """Store a chunk durably (the caller commits its DELETE only afterwards)."""
        if self.bucket:
            with self._s3_lock:
                if self._s3 is None:  # boto3 (~300 ms) only for a pass that has a bucket
                    from m10jobs.edges import storage

                    self._s3 = storage.client(self.config)
            self._s3.put_object(
                Bucket=self.bucket,
                Key=f"{self.prefix}{policy}/{self.day}/{name}",
                Body=data,
                ContentType=("application/zstd" if name.endswith(".zst") else "application/gzip"),
            )
        elif name.endswith(CHUNK_SUFFIX):
            # a table chunk's name (its id range) is its own: no directory lock to wait on
            files.write_unique(self.dir / policy / self.day / name, data, mode=0o640)
        else:
            files.atomic_write(self.dir / policy / self.day / name, data, mode=0o640)

    def remove_temps(self, policy: str) -> None:
        """Before a table policy's batches: what a killed run's chunk writes left behind."""
        if not self.bucket:
            files.remove_temps(self.dir / policy / self.day)


@dataclass
class Outcome:
    archived: int = 0
    deleted: int = 0
    batches: int = 0
    longest_txn_s: float = 0.0


def purge_table(
    ctx: PassContext,
    policy: str,
    job_id: int,
    cutoff: datetime,
    sink: Sink,
    batch_size: int,
    workers: int = 2,
) -> Outcome:
    """Keyset batches (id > last batch's upper id), so no batch rescans the dead index
    entries of the ones before it; a new run starts from id 0 again, which resumes it.
    PostgreSQL renders the rows and streams them with COPY: no per-row Python work but a
    buffer append.

    Returning and rendering the rows costs PostgreSQL over twice the DELETE itself, so
    `workers` batches run at once, each on its own connection and in its own
    transaction (disjoint id ranges: they never wait for each other's rows), while
    this thread finds the next batch's bounds.  Each still commits only after its
    own chunk is durable.

    Finding the next `batch_size` eligible rows visits each row's heap tuple (the
    cutoff), a second time before its DELETE does: a tenth of the CPU of the whole.  So
    while every row of the batches so far was eligible, a batch is the span of the next
    `batch_size` ids, read off the primary key alone (an index-only scan); its DELETE
    still checks every row, and a span that held a row to keep ends this, from the next
    batch on.  A batch holds at most `batch_size` rows either way."""
    out = Outcome()
    after = 0
    sink.remove_temps(policy)
    meta = chunk_meta(ctx.conn, TABLE_TARGET_PREFIX + POLICY_TABLES.get(policy, policy))
    idle: list[psycopg.Connection[Any]] = []
    opened: list[psycopg.Connection[Any]] = []
    running: dict[Future[tuple[int, float]], psycopg.Connection[Any]] = {}
    span_rows: dict[Future[tuple[int, float]], int] = {}  # a span batch -> its row count
    spans = policy in SPAN_POLICIES
    pool = ThreadPoolExecutor(workers, thread_name_prefix=f"retention-{policy}")

    def collect(done: set[Future[tuple[int, float]]]) -> None:
        nonlocal spans
        for f in done:
            idle.append(running.pop(f))
            n, took = f.result()
            if n < span_rows.pop(f, n):
                spans = False  # the eligible rows end (or thin out) here
            out.archived += n
            out.deleted += n
            out.batches += 1
            out.longest_txn_s = max(out.longest_txn_s, took)

    try:
        while True:
            ctx.check()
            args = {"cutoff": cutoff, "limit": batch_size, "after": after}
            span = spans
            r = one(
                ctx.conn.execute(query(f"retention_{'span' if span else 'upto'}_{policy}"), args)
            )
            upto = r["upto"]
            if upto is None:
                break
            if not idle and len(opened) < workers:
                opened.append(db.connect(ctx.dsn, app=f"{ctx.job.script}:retention"))
                idle.append(opened[-1])
            while not idle:
                collect(wait(running, return_when=FIRST_COMPLETED).done)
            conn = idle.pop()
            f = pool.submit(
                _purge_batch, ctx, conn, policy, job_id, sink, meta, {**args, "upto": upto}
            )
            running[f] = conn
            if span:
                span_rows[f] = r["n"]
            after = upto
        while running:
            collect(wait(running, return_when=FIRST_COMPLETED).done)
        return out
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for c in opened:
            c.close()


def _purge_batch(
    ctx: PassContext,
    conn: psycopg.Connection[Any],
    policy: str,
    job_id: int,
    sink: Sink,
    meta: bytes,
    args: dict[str, Any],
) -> tuple[int, float]:
    """One batch in one transaction: DELETE ... RETURNING as binary COPY, store the chunk,
    count it, fence, commit.  Rows archived/deleted, seconds the transaction took."""
    t0 = time.monotonic()
    with db.translated(ctx.dsn), conn.transaction(), conn.cursor() as cur:
        data, n = copy_out(conn, query(f"retention_copy_{policy}"), args)
        if n:
            sink.put(
                policy,
                f"{policy}-{args['after'] + 1:012d}-{args['upto']:012d}{CHUNK_SUFFIX}",
                compress_chunk(data, meta),
            )
            cur.execute(query("retention_progress"), {"id": job_id, "archived": n, "deleted": n})
            ctx.fence(cur)
    return n, time.monotonic() - t0


# -- the tasks -----------------------------------------------------------------
Plan = tuple[str, str, float, Callable[[int, datetime], Outcome]]
"""(policy, target, max age in seconds, fn(retention_jobs id, cutoff) -> Outcome)."""


def cleanup(ctx: PassContext) -> dict[str, Any]:
    """The table policies (task retention_cleanup, cluster-wide: the rows are shared)."""
    s = ctx.config.settings(RetentionSettings)
    sink = Sink(ctx.config, s)
    plans: list[Plan] = []
    for policy in TABLE_POLICIES:
        secs = policy_age(s, policy)
        if secs is not None:
            plans.append(
                (
                    policy,
                    f"m10_recovery.{POLICY_TABLES.get(policy, policy)}",
                    secs,
                    functools.partial(
                        purge_table,
                        ctx,
                        policy,
                        sink=sink,
                        batch_size=s.batch_size,
                        workers=s.workers,
                    ),
                )
            )
    if ctx.dry_run:
        would = {
            policy: one(ctx.conn.execute(query(f"retention_count_{policy}"), {"max_age_s": secs}))[
                "n"
            ]
            for policy, _, secs, _ in plans
        }
        return {"would_delete": would, "archive": sink.location("<policy>")}
    results, longest, failures = run_plans(ctx, sink, plans, TABLE_POLICIES, TABLE_TARGET_PREFIX)
    ctx.gauge(
        "m10_retention_longest_txn_seconds", longest, "Longest single retention batch transaction."
    )
    fail_on(failures)
    return {
        "policies": results,
        "longest_txn_s": round(longest, 3),
        "archive": sink.location("<policy>"),
    }


def policy_age(s: RetentionSettings, policy: str) -> float | None:
    p: Policy = getattr(s, policy)
    return float(p.max_age_days) * DAY if p.enabled else None


def run_plans(
    ctx: PassContext, sink: Sink, plans: list[Plan], policies: tuple[str, ...], target_prefix: str
) -> tuple[dict[str, Any], float, list[str]]:
    """Run each plan under its own retention_jobs row; a failing policy does not stop the
    others (the caller then fails the task: fail_on).  Rows of this task's own domain
    (its policies and target prefix: the tables, or this host's files) left `running` by a
    killed run are closed as interrupted; another task's or host's running rows may be live."""
    for r in ctx.conn.execute(
        query("retention_interrupted"),
        {"run_id": ctx.run_id, "policies": list(policies), "target_prefix": target_prefix},
    ):
        ctx.log.warning(
            "retention run %s (policy %s) was interrupted; resuming its work",
            r["run_id"],
            r["policy"],
        )
    results: dict[str, Any] = {}
    failures: list[str] = []
    longest = 0.0
    for policy, target, secs, fn in plans:
        t0 = time.monotonic()
        job = one(
            ctx.conn.execute(
                query("retention_start"),
                {
                    "run_id": ctx.run_id,
                    "policy": policy,
                    "target": target,
                    "max_age_s": secs,
                    "archive_location": sink.location(policy),
                },
            )
        )
        try:
            out = fn(job["id"], job["cutoff"])
        except BaseException as exc:
            with contextlib.suppress(Exception):
                ctx.conn.execute(
                    query("retention_finish"),
                    {"id": job["id"], "status": "failed", "error": str(exc)[:500]},
                )
            if (
                not isinstance(exc, Exception)
                or db.is_connection_error(exc)
                or isinstance(exc, LeaseLost | DependencyUnavailable)
            ):
                raise

            if isinstance(as_m10_error(exc, None), DependencyUnavailable):
                raise  # object storage down: 69, like any other dependency
            ctx.log.error("retention policy %s failed: %s", policy, exc)
            failures.append(policy)
            continue
        ctx.conn.execute(
            query("retention_finish"), {"id": job["id"], "status": "succeeded", "error": None}
        )
        longest = max(longest, out.longest_txn_s)
        results[policy] = {
            "archived": out.archived,
            "deleted": out.deleted,
            "seconds": round(time.monotonic() - t0, 3),
        }
        ctx.gauge(
            "m10_retention_rows_deleted",
            out.deleted,
            "Rows/files deleted by retention.",
            policy=policy,
        )
    return results, longest, failures


def fail_on(failures: list[str]) -> None:
    if failures:
        raise TaskFailed(
            f"retention policies failed: {', '.join(failures)} (see the log and "
            "`m10 retention history`); the others ran"
        )
