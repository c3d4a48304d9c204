"""m10-outbox-processor: single-leader drain of m10_recovery.outbox into Redis Streams.

One pass under lease `m10:outbox_processor`: claim ready pending events in id
order, a batch at a time; append each to its stream exactly once (a Lua script
keyed by event id, see edges/outbox_stream.py); then, in one transaction that
checks the fencing token, mark them published and record them in replay_log.
A leader whose lease lapsed cannot commit; whatever it appended is found again
by its successor's dedup lookup, so nothing is appended twice.

Per aggregate (aggregate_type, aggregate_id) events go out in id order: a
failing event holds back the later events of its aggregate, nobody else's.
Failures are retried with exponential backoff, jitter and a cap; after
`max_attempts` (or at once, for an oversize payload) the event goes to the
dead-letter stream and then into dead_letter_archive, and its aggregate moves on.

Low latency without a daemon: run with --linger (as the unit runs it), a pass that
has drained keeps its lease and LISTENs for enqueue_outbox's notification for
outbox.linger_seconds, draining again on each, then releases and exits 0; systemd
restarts the unit at once (Restart=on-success), so a hand-over costs one start-up.
Without --linger (a hand run, `m10 run`) a pass drains and exits.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import errors
from psycopg.types.json import Jsonb

from m10jobs.edges import conninfo, db, streams
from m10jobs.edges.outbox_stream import (
    Entry,
    NotAcknowledged,
    Publisher,
    Trim,
    dead_letter_key,
    field_pairs,
    published_key,
)
from m10jobs.edges.queries import one, query
from m10jobs.errors import DependencyUnavailable, TaskFailed
from m10jobs.jobs.outbox import durable
from m10jobs.jobs.outbox.settings import OutboxSettings
from m10jobs.stopping import STOP

if TYPE_CHECKING:
    from concurrent.futures import Future

    import psycopg

    from m10jobs.edges.outbox_stream import Outcome
    from m10jobs.runner import PassContext

CHANNEL = "m10_outbox"  # enqueue_outbox() notifies it (migration 065)
LINGER_POLL_S = 5.0  # while lingering, drain at least this often (retries falling due)
# Behind a transaction-pooling PgBouncer there is no LISTEN (a notification goes to
# whichever client holds the server session): a lingering pass polls this often, so an
# event waits up to this long (plus the drain) instead of milliseconds.
POOLED_POLL_S = 1.0
WAIT_SLICE_S = 0.1  # how often a linger wait looks at the stop flag


PREVIEW_CHARS = 256  # of an oversize payload, in its dead letter (<= 1 KiB of UTF-8)


def claim_params(s: OutboxSettings, after: int) -> dict[str, Any]:
    """outbox_claim's parameters: the claim measures payloads and returns an oversize
    one's sha256 and preview instead of its text."""
    return {
        "after": after,
        "limit": s.batch_size,
        "max_payload_bytes": s.max_payload_bytes,
        "preview_chars": PREVIEW_CHARS,
    }


def order_key(row: dict[str, Any]) -> str:
    if row["aggregate_id"] is None:
        return ""
    return f"{row['aggregate_type'] or ''}\x00{row['aggregate_id']}"


def claim(conn: psycopg.Connection[Any], s: OutboxSettings, after: int) -> list[dict[str, Any]]:
    """The next ready events after id `after`, in id order.  In a transaction of its own
    with outbox_claim_plan, so the plan is the ordered index walk even on a table not
    analyzed since a burst (the backlog is when the drain must be fastest)."""
    with conn.transaction():
        conn.execute(query("outbox_claim_plan"))
        return conn.execute(query("outbox_claim"), claim_params(s, after)).fetchall()


def analyze_if_stale(conn: psycopg.Connection[Any], observed: int) -> bool:
    """ANALYZE the outbox when a claim found more pending events than its statistics know
    of (a burst since the last ANALYZE, or none ever): the hold-back probe's plan needs
    them.  Skipped when the table is busy (an autovacuum is analyzing it).  Whether it ran."""
    if one(conn.execute(query("outbox_pending_estimate")))["estimate"] >= observed:
        return False
    try:
        with conn.transaction():
            conn.execute(query("outbox_analyze_lock_timeout"))
            conn.execute(query("outbox_analyze"))
    except errors.LockNotAvailable:
        return False
    return True


@dataclass
class Totals:
    published: int = 0
    recovered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    held_back: int = 0
    batches: int = 0
    wakeups: int = 0
    republished: int = 0
    """Published events Redis had lost, appended again (reconciliation)."""


def process(ctx: PassContext) -> dict[str, Any]:
    s = ctx.config.settings(OutboxSettings)
    if ctx.dry_run:
        ready = claim(ctx.conn, s, 0)
        return {"would_publish_first_batch": len(ready), **_backlog(ctx)}
    t0 = time.monotonic()
    ttl = ctx.lease.ttl if ctx.lease else ctx.config.lease_ttl_seconds
    deadline = t0 + s.budget(ttl, ctx.job.timeout_seconds)
    linger_end = min(deadline, t0 + (s.linger_seconds if ctx.params.get("linger") else 0.0))
    stopping = STOP  # set by SIGTERM/SIGINT (the runner's handlers): the waits wake on it
    totals, exhausted = _drain_and_linger(ctx, s, deadline, linger_end, stopping)
    elapsed = time.monotonic() - t0
    backlog = _backlog(ctx)
    summary = {
        **totals.__dict__,
        **backlog,
        "budget_exhausted": exhausted,
        "stopped_by_signal": stopping.is_set(),
        "events_per_s": round((totals.published + totals.recovered) / elapsed, 1)
        if elapsed > 0
        else 0.0,
    }
    ctx.gauge("m10_outbox_published", totals.published, "Events published by the last pass.")
    ctx.gauge(
        "m10_outbox_dead_lettered", totals.dead_lettered, "Events dead-lettered by the last pass."
    )
    ctx.gauge("m10_outbox_backlog", backlog["backlog"], "Pending outbox events after the pass.")
    ctx.gauge(
        "m10_outbox_oldest_pending_age_seconds",
        backlog["oldest_pending_age_s"],
        "Age of the oldest pending outbox event.",
    )
    ctx.gauge(
        "m10_outbox_republished",
        totals.republished,
        "Published events Redis had lost, appended again by the last pass.",
    )
    if totals.republished:
        raise TaskFailed(
            f"Redis had lost {totals.republished} acknowledged event(s); they were appended "
            "again (see the reconciliation line above); check Redis' persistence and replicas",
            summary,
        )
    ctx.log.info(
        "outbox: published %d (+%d recovered), retried %d, dead-lettered %d, backlog %d",
        totals.published,
        totals.recovered,
        totals.retried,
        totals.dead_lettered,
        backlog["backlog"],
    )
    return summary


def _drain_and_linger(
    ctx: PassContext,
    s: OutboxSettings,
    deadline: float,
    linger_end: float,
    stopping: threading.Event,
) -> tuple[Totals, bool]:
    """Drain; then, until linger_end, wait for enqueue_outbox's notification (or
    LINGER_POLL_S) and drain again.  LISTEN starts before the first drain, so an
    event committed in between is never missed.  Whether the budget ran out."""
    trim = (
        Trim("MINID", s.trim_minid_seconds * 1000)
        if s.trim_minid_seconds
        else Trim("MAXLEN", s.trim_maxlen)
        if s.trim_maxlen
        else None
    )
    url = ctx.config.redis_url
    totals = Totals()
    # Batch k commits on its own connection while batch k+1 is claimed and published:
    # appends are idempotent, so a crash in between only costs dedup lookups.
    committer = ThreadPoolExecutor(1, thread_name_prefix="outbox-commit")
    commit_conn = db.connect(ctx.dsn, app=f"{ctx.job.script}:commit")
    listener = None
    try:
        if linger_end > time.monotonic() and not conninfo.transaction_pooled():
            listener = db.connect(ctx.dsn, app=f"{ctx.job.script}:listen")
            listener.execute(f"LISTEN {CHANNEL}")
        with streams.translated(url):
            client = streams.client(url)
            info = streams.server_info(client)
            wait = durable.check(ctx, s, info, url)
            watch = durable.Watch(client, info)
            publisher = Publisher(client, dedup_ttl_s=s.dedup_ttl_seconds, trim=trim, wait=wait)
            fix = _Reconciler(ctx, s, publisher, commit_conn, watch, totals)
            if durable.lost_newest(ctx, s, client):
                fix("the newest published event's dedup key is gone from Redis")
            while True:
                if _drain(
                    ctx, s, publisher, committer, commit_conn, totals, deadline, stopping, fix
                ):
                    return totals, True
                if not _wait(ctx, listener, linger_end, stopping):
                    return totals, False
                if watch.poll():  # each tick: Redis still there (else 69), still the same
                    fix("Redis restarted or failed over while the pass lingered")
                totals.wakeups += 1
    finally:
        committer.shutdown(wait=True, cancel_futures=True)
        commit_conn.close()
        if listener is not None:
            listener.close()


@dataclass
class _Reconciler:
    """Runs the reconciliation (committed batches first) and counts what it republished."""

    ctx: PassContext
    s: OutboxSettings
    publisher: Publisher
    commit_conn: psycopg.Connection[Any]
    watch: durable.Watch
    totals: Totals

    def __call__(self, why: str) -> None:
        self.totals.republished += durable.reconcile(
            self.ctx, self.s, self.publisher, self.commit_conn, why
        )
        self.watch.changed(self.publisher.run_id)


def _drain(
    ctx: PassContext,
    s: OutboxSettings,
    publisher: Publisher,
    committer: ThreadPoolExecutor,
    commit_conn: psycopg.Connection[Any],
    totals: Totals,
    deadline: float,
    stopping: threading.Event,
    fix: _Reconciler,
) -> bool:
    """Publish every ready event, batch by batch; True when the budget ran out.  A batch
    written by another Redis server than the last (a restart or failover in between,
    which the client follows silently) triggers the reconciliation."""
    after = 0
    in_flight: Future[None] | None = None
    exhausted = False
    checked_stats = False
    while True:
        ctx.check()
        if stopping.is_set():
            break
        if time.monotonic() >= deadline:
            exhausted = True
            break
        rows = claim(ctx.conn, s, after)
        if not rows:
            break
        if not checked_stats and len(rows) == s.batch_size:
            checked_stats = True  # once a drain: a full batch says the backlog is one
            if analyze_if_stale(ctx.conn, len(rows)):
                ctx.log.info(
                    "outbox: analyzed m10_recovery.outbox (statistics predated the backlog)"
                )
        try:
            outcome = _publish_batch(ctx, s, publisher, rows, totals)
        except NotAcknowledged as exc:
            raise DependencyUnavailable(
                f"Redis did not acknowledge a batch: {exc}; its events stay pending (the next "
                "pass finds their entries through the dedup keys); check the replicas"
            ) from None
        if in_flight is not None:
            in_flight.result()
        in_flight = committer.submit(_commit, ctx, commit_conn, s, outcome)
        after = rows[-1]["id"]
        if fix.watch.changed(publisher.run_id):
            in_flight.result()
            in_flight = None
            fix("Redis restarted or failed over during the pass")
        if outcome.resume_at is not None:
            if in_flight is not None:  # re-claimed rows must see this batch committed
                in_flight.result()
            after = outcome.resume_at - 1
    if in_flight is not None:
        in_flight.result()  # committed before the pass lingers or ends
    return exhausted


def _wait(
    ctx: PassContext,
    listener: psycopg.Connection[Any] | None,
    until: float,
    stopping: threading.Event,
) -> bool:
    """Wait for a notification, LINGER_POLL_S (POOLED_POLL_S without a listener), or
    the end of the linger; False at its end or on a stop request.  Sliced so a SIGTERM
    (or a lost lease) is seen within WAIT_SLICE_S."""
    poll = LINGER_POLL_S if listener is not None else POOLED_POLL_S
    poll_end = min(until, time.monotonic() + poll)
    while not stopping.is_set():
        ctx.check()
        left = poll_end - time.monotonic()
        if left <= 0:
            return time.monotonic() < until
        if listener is None:
            stopping.wait(min(WAIT_SLICE_S, left))
            continue
        for _ in listener.notifies(timeout=min(WAIT_SLICE_S, left), stop_after=1):
            return not stopping.is_set()
    return False


def _backlog(ctx: PassContext) -> dict[str, Any]:
    row = one(ctx.conn.execute(query("outbox_backlog")))
    return {
        "backlog": row["backlog"],
        "retrying": row["retrying"],
        "dead_lettered_total": row["dead_lettered"],
        "oldest_pending_age_s": round(row["oldest_pending_age_s"], 3),
    }


@dataclass
class BatchOutcome:
    published: list[tuple[dict[str, Any], str, Outcome]]
    failed: list[tuple[dict[str, Any], str]]
    dead: list[tuple[dict[str, Any], str, str, dict[str, str]]]
    resume_at: int | None
    """First id to claim again: events held back behind one this batch dead-lettered."""


def _publish_batch(
    ctx: PassContext,
    s: OutboxSettings,
    publisher: Publisher,
    rows: list[dict[str, Any]],
    totals: Totals,
) -> BatchOutcome:
    """Append one claimed batch (and its dead letters) to Redis; what to commit."""
    dead: list[tuple[dict[str, Any], str]] = []
    sendable: list[dict[str, Any]] = []
    for r in rows:
        if r["payload_bytes"] > s.max_payload_bytes:
            dead.append(
                (
                    r,
                    f"payload of {r['payload_bytes']} bytes exceeds outbox.max_payload_bytes "
                    f"({s.max_payload_bytes})",
                )
            )
        else:
            sendable.append(r)
    prefix = s.dedup_key_prefix
    entries = [
        Entry(
            s.stream_for(r["event_type"]), published_key(prefix, r["id"]), r["fields"], order_key(r)
        )
        for r in sendable
    ]
    outcomes = publisher.publish(entries)
    published: list[tuple[dict[str, Any], str, Outcome]] = []
    failed: list[tuple[dict[str, Any], str]] = []
    held: list[dict[str, Any]] = []
    for r, e, o in zip(sendable, entries, outcomes, strict=True):
        if o.published:
            published.append((r, e.stream, o))
        elif o.status == "err":
            if r["attempts"] + 1 >= s.max_attempts:
                dead.append(
                    (r, f"publish to {e.stream} failed {r['attempts'] + 1} times, last: {o.value}")
                )
            else:
                failed.append((r, o.value))
        else:
            held.append(r)
    dl = _dead_letter(s, publisher, dead) if dead else []
    dl_keys = {order_key(r) for r, _, _, _ in dl} - {""}
    publisher.release(dl_keys)
    unblocked = [r["id"] for r in held if order_key(r) in dl_keys]
    totals.batches += 1
    totals.published += sum(1 for _, _, o in published if o.status == "ok")
    totals.recovered += sum(1 for _, _, o in published if o.status == "dup")
    totals.retried += len(failed)
    totals.dead_lettered += len(dl)
    totals.held_back += len(held) - len(unblocked)
    for r, error in failed:
        ctx.log.warning("event %d (%s) failed, will retry: %s", r["id"], r["event_type"], error)
    for r, _reason, _entry_id, fields in dl:
        ctx.log.warning(
            "event %d (%s) dead-lettered: %s", r["id"], r["event_type"], fields["reason"]
        )
    return BatchOutcome(published, failed, dl, min(unblocked) if unblocked else None)


def _dead_letter_fields(s: OutboxSettings, r: dict[str, Any], reason: str) -> list[tuple[str, str]]:
    """A dead letter's fields: the event's, the reason and attempts; for a payload refused
    for its size, a bounded record instead of the payload (its size, sha256, a preview;
    the payload stays in m10_recovery.outbox under event_id) and refusal=size, so
    reconcile never replays it (it would be refused again)."""
    extra = [("reason", reason), ("attempts", str(r["attempts"] + 1))]
    if r["payload_bytes"] <= s.max_payload_bytes:
        return [*field_pairs(r["fields"]), *extra]
    bounded = [(k, v) for k, v in field_pairs(r["fields"]) if k != "payload"]
    return [
        *bounded,
        ("payload_bytes", str(r["payload_bytes"])),
        ("payload_sha256", r["payload_sha256"]),
        ("payload_preview", r["payload_preview"]),
        ("refusal", "size"),
        *extra,
    ]


def _dead_letter(
    s: OutboxSettings, publisher: Publisher, dead: list[tuple[dict[str, Any], str]]
) -> list[tuple[dict[str, Any], str, str, dict[str, str]]]:
    """Append dead letters to the dead-letter stream (before the row is marked)."""
    entries, pairs = [], []
    for r, reason in dead:
        fields = _dead_letter_fields(s, r, reason)
        pairs.append(fields)
        entries.append(
            Entry(
                s.dead_letter_stream,
                dead_letter_key(s.dedup_key_prefix, r["id"], r["dead_letters"] + 1),
                fields,
            )
        )
    outcomes = publisher.publish(entries)
    bad = [o.value for o in outcomes if not o.published]
    if bad:
        raise TaskFailed(
            f"could not append to dead-letter stream {s.dead_letter_stream}: "
            f"{bad[0]}; check that the key is a stream (`TYPE "
            f"{s.dead_letter_stream}` in redis-cli)"
        )
    return [
        (r, reason, o.value, dict(f))
        for (r, reason), f, o in zip(dead, pairs, outcomes, strict=True)
    ]


def _commit(
    ctx: PassContext, conn: psycopg.Connection[Any], s: OutboxSettings, b: BatchOutcome
) -> None:
    """Mark a published batch in one transaction that checks the fencing token."""
    lease = ctx.lease
    with db.translated(ctx.dsn), conn.transaction(), conn.cursor() as cur:
        ctx.fence(cur)
        if b.published:
            cur.execute(
                query("outbox_mark_published"),
                {
                    "ids": [r["id"] for r, _, _ in b.published],
                    "streams": [stream for _, stream, _ in b.published],
                    "entry_ids": [o.value for _, _, o in b.published],
                    "token": lease.token if lease else None,
                    "holder": lease.holder if lease else None,
                },
            )
        if b.failed:
            cur.execute(
                query("outbox_mark_failed"),
                {
                    "ids": [r["id"] for r, _ in b.failed],
                    "errors": [e[:2000] for _, e in b.failed],
                    "delays": [s.retry_delay(r["attempts"]) for r, _ in b.failed],
                },
            )
        if b.dead:
            cur.execute(
                query("outbox_mark_dead_lettered"),
                {
                    "ids": [r["id"] for r, _, _, _ in b.dead],
                    "reasons": [reason for _, reason, _, _ in b.dead],
                    "entry_ids": [entry_id for _, _, entry_id, _ in b.dead],
                    "sources": [s.stream_for(r["event_type"]) for r, _, _, _ in b.dead],
                    "fields": [Jsonb(fields) for _, _, _, fields in b.dead],
                    "dl_stream": s.dead_letter_stream,
                },
            )
