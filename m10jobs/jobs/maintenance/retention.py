"""Retention tasks of m10-maintenance (seed: retention_archive.py).

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
import gzip
import json
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m10jobs.edges import db, fallback, files
from m10jobs.edges.queries import one, query
from m10jobs.errors import BadInput, DependencyUnavailable, LeaseLost, TaskFailed
from m10jobs.jobs.canary.report import LATEST, reports_dir
from m10jobs.jobs.maintenance.settings import Policy, RetentionSettings
from m10jobs.jobs.stats.statsfile import NAME, marker_path
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
)
# policy -> its table, where the two differ
POLICY_TABLES = {"outbox_dead_lettered": "outbox"}
TABLE_TARGET_PREFIX = "m10_recovery."
FILE_POLICIES = ("fallback_uploads", "stats_csv", "canary_reports")
# table policies whose batches may be spans of the next ids (retention_span_<policy>), while
# every row of a span turns out eligible (the old end of an append-only table); the others,
# and these once a span held a row to keep, find each batch's eligible rows (retention_upto_*)
SPAN_POLICIES = ("replay_log", "dead_letter_archive", "outbox", "retention_jobs")
# `m10 retention show` prints a chunk's timestamps as ISO 8601 in UTC, whatever the server's
# defaults (the chunks themselves are binary: no session setting changes them)
ARCHIVE_SESSION = "-c DateStyle=ISO -c TimeZone=UTC"
# a table chunk: PostgreSQL's binary COPY stream, zstd-compressed
CHUNK_SUFFIX = ".pgcopy.zst"
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
# the header extension's contents start so (the format lets a writer put data there; COPY
# FROM skips it): then JSON {"table": ..., "columns": [[name, type], ...]}
CHUNK_META_TAG = b"m10jobs-retention-chunk:"


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
    meta = chunk_meta(ctx.conn, POLICY_TABLES.get(policy, policy))
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
        data, n = _copy_out(conn, query(f"retention_copy_{policy}"), args)
        if n:
            sink.put(
                policy,
                f"{policy}-{args['after'] + 1:012d}-{args['upto']:012d}{CHUNK_SUFFIX}",
                compress_chunk(data, meta),
            )
            cur.execute(query("retention_progress"), {"id": job_id, "archived": n, "deleted": n})
            ctx.fence(cur)
    return n, time.monotonic() - t0


def chunk_meta(conn: psycopg.Connection[Any], table: str) -> bytes:
    """The header extension of a table's chunks: its columns and their types, in order."""
    cols = [
        [r["name"], r["type"]]
        for r in conn.execute(
            query("retention_columns"), {"table": f"{TABLE_TARGET_PREFIX}{table}"}
        )
    ]
    return (
        CHUNK_META_TAG
        + json.dumps({"table": f"{TABLE_TARGET_PREFIX}{table}", "columns": cols}).encode()
    )


def compress_chunk(data: bytes | bytearray, meta: bytes) -> bytes:
    """A binary COPY stream with meta as its header extension, zstd level 1.  (Level 1:
    ~0.15 s of CPU a million rows against gzip level 1's ~0.4 s, and smaller.)"""
    import zstandard  # only for a pass that archives rows

    if data[:11] != COPY_SIGNATURE or data[15:19] != bytes(4):
        raise TaskFailed("COPY (FORMAT binary) did not start with the header expected")
    head = bytes(data[:15]) + struct.pack("!i", len(meta)) + meta
    z = zstandard.ZstdCompressor(level=1).compressobj(size=len(head) + len(data) - 19)
    return z.compress(head) + z.compress(memoryview(data)[19:]) + z.flush()


MAX_CHUNK_BYTES = 4 << 30  # decompressed; batches hold at most 100,000 rows


def open_chunk(name: str, data: bytes) -> bytes:
    """A chunk's contents, decompressed: a binary COPY stream (*.pgcopy.zst), or the CSV
    or JSON lines of a chunk from before it (*.gz).  BadInput (65) for anything else."""
    import zstandard

    fix = (
        "it is not a whole retention chunk (truncated or not one): restore it from the "
        "archive's copy"
    )
    try:
        if name.endswith(".gz"):
            return gzip.decompress(data)
        if not name.endswith(CHUNK_SUFFIX):
            raise BadInput(f"{name}: not a retention chunk (*{CHUNK_SUFFIX}, *.csv.gz, *.jsonl.gz)")
        size = zstandard.frame_content_size(data)
        if not 0 < size <= MAX_CHUNK_BYTES:
            raise BadInput(f"{name}: its zstd header gives no plausible size; {fix}")
        stream = zstandard.ZstdDecompressor().decompress(data)
    except (OSError, EOFError, zstandard.ZstdError) as exc:
        raise BadInput(f"{name}: {exc}; {fix}") from None
    if stream[:11] != COPY_SIGNATURE or len(stream) < 21 or stream[-2:] != b"\xff\xff":
        raise BadInput(f"{name}: not a whole PostgreSQL binary COPY stream; {fix}")
    return stream


def chunk_columns(name: str, stream: bytes) -> list[tuple[str, str]]:
    """The [name, type] columns a chunk's header extension records (open_chunk's stream).
    BadInput when it records none or they do not parse."""
    (ext,) = struct.unpack("!i", stream[15:19])
    body = stream[19 : 19 + ext]
    try:
        if not body.startswith(CHUNK_META_TAG):
            raise ValueError("no column list")
        cols = json.loads(body[len(CHUNK_META_TAG) :])["columns"]
        if not cols or not all(
            isinstance(c, list) and len(c) == 2 and all(isinstance(v, str) and v for v in c)
            for c in cols
        ):
            raise ValueError("a malformed column list")
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInput(
            f"{name}: its header names no columns ({exc}); restore it with "
            "`m10 retention show --binary` into the table it came from"
        ) from None
    return [(c[0], c[1]) for c in cols]


def load_chunk(conn: psycopg.Connection[Any], name: str, stream: bytes) -> None:
    """Load a chunk's stream (open_chunk) into TEMPORARY TABLE chunk, dropped at the end
    of the transaction, shaped by the columns its header records.  The database resolves
    the types first (to_regtype), so the CREATE holds only types it knows by those names,
    never text from the file."""
    from psycopg import errors as e
    from psycopg import sql

    cols = chunk_columns(name, stream)
    try:
        types = [
            r["type"]
            for r in conn.execute(query("retention_chunk_types"), {"types": [t for _, t in cols]})
        ]
    except (e.DataError, e.ProgrammingError) as exc:
        raise BadInput(
            f"{name}: its header names a type PostgreSQL cannot parse ({exc.diag.message_primary})"
        ) from None
    unknown = [t for (_, t), known in zip(cols, types, strict=True) if known is None]
    if unknown:
        raise BadInput(
            f"{name}: its header names types this database does not have: {', '.join(unknown)}"
        )
    conn.execute(
        sql.SQL("CREATE TEMPORARY TABLE chunk ({}) ON COMMIT DROP").format(
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t))
                for (n, _), t in zip(cols, types, strict=True)
            )
        )
    )
    with conn.cursor() as cur, cur.copy("COPY chunk FROM STDIN (FORMAT binary)") as cp:
        cp.write(stream)


def _copy_out(
    conn: psycopg.Connection[Any], sql: str, args: dict[str, Any]
) -> tuple[bytearray, int]:
    """COPY ... TO STDOUT read straight off libpq: psycopg's Copy waits once per row,
    which at a million rows costs the client more than PostgreSQL's rendering."""
    import select

    from psycopg import ClientCursor, pq
    from psycopg import errors as e

    pg = conn.pgconn
    pg.send_query(ClientCursor(conn).mogrify(sql, args).encode())
    buf = bytearray()  # grown in place: keeping a million row buffers to join costs 3x
    poll = select.poll()
    poll.register(pg.socket, select.POLLIN | select.POLLOUT)
    while pg.flush():  # a non-blocking connection: the query may not have gone out yet
        poll.poll()
    poll.modify(pg.socket, select.POLLIN)
    res = None
    while True:  # the first result: COPY_OUT, or the error
        pg.consume_input()
        if not pg.is_busy():
            res = pg.get_result()
            break
        poll.poll()
    if res is None:
        raise e.OperationalError(pg.get_error_message())
    if res.status != pq.ExecStatus.COPY_OUT:
        while pg.get_result() is not None:
            pass
        raise e.error_from_result(res, encoding=conn.info.encoding)
    get = pg.get_copy_data
    while True:
        nbytes, data = get(1)
        if nbytes > 0:
            buf += data
        elif nbytes == 0:
            poll.poll()
            pg.consume_input()
        else:
            break
    res = pg.get_result()
    while pg.get_result() is not None:
        pass
    if res is None:
        raise e.OperationalError(pg.get_error_message())
    if res.status != pq.ExecStatus.COMMAND_OK:
        raise e.error_from_result(res, encoding=conn.info.encoding)
    return buf, res.command_tuples or 0


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


# -- the tasks -----------------------------------------------------------------
Plan = tuple[str, str, float, Callable[[int, datetime], Outcome]]
"""(policy, target, max age in seconds, fn(retention_jobs id, cutoff) -> Outcome)."""


def cleanup(ctx: PassContext) -> dict[str, Any]:
    """The table policies (task retention_cleanup, cluster-wide: the rows are shared)."""
    s = ctx.config.settings(RetentionSettings)
    sink = Sink(ctx.config, s)
    plans: list[Plan] = []
    for policy in TABLE_POLICIES:
        secs = _age(s, policy)
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
    results, longest, failures = _run(ctx, sink, plans, TABLE_POLICIES, TABLE_TARGET_PREFIX)
    ctx.gauge(
        "m10_retention_longest_txn_seconds", longest, "Longest single retention batch transaction."
    )
    _fail_on(failures)
    return {
        "policies": results,
        "longest_txn_s": round(longest, 3),
        "archive": sink.location("<policy>"),
    }


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
    secs = _age(s, "fallback_uploads")
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
    secs = _age(s, "canary_reports")
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
    results, _, failures = _run(ctx, sink, plans, FILE_POLICIES, host)
    _fail_on(failures)
    return {"policies": results, "archive": sink.location("<policy>")}


def _age(s: RetentionSettings, policy: str) -> float | None:
    p: Policy = getattr(s, policy)
    return float(p.max_age_days) * DAY if p.enabled else None


def _run(
    ctx: PassContext, sink: Sink, plans: list[Plan], policies: tuple[str, ...], target_prefix: str
) -> tuple[dict[str, Any], float, list[str]]:
    """Run each plan under its own retention_jobs row; a failing policy does not stop the
    others (the caller then fails the task: _fail_on).  Rows of this task's own domain
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


def _fail_on(failures: list[str]) -> None:
    if failures:
        raise TaskFailed(
            f"retention policies failed: {', '.join(failures)} (see the log and "
            "`m10 retention history`); the others ran"
        )
