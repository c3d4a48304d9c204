"""Durable before published: what the outbox checks of Redis, and the reconciliation
after Redis lost acknowledged writes.

At pass start (check): the server must be a primary (78 otherwise), should keep what
it acknowledges (AOF with appendfsync everysec/always: 78 with outbox.require_aof,
else one warning), and must have outbox.min_replicas connected replicas (69); each
batch then waits for them (WAIT, and WAITAOF on Redis >= 7.2 with AOF) before it is
marked published (edges/outbox_stream.Wait).

Loss is always a suffix of Redis' write history (a restart loses what was not yet
on disk, a promoted replica what it had not yet received), so the steady-state check
is one key: the newest event replay_log calls published must still have its dedup
key.  A changed server run_id (restart, failover) seen in the middle of a pass means
batches may have gone to two servers, so the window is checked at once.  The
reconciliation reads the events published within outbox.reconcile_window_seconds
(at most outbox.reconcile_max_events, newest first), looks up their dedup keys, and
appends the missing ones again through the same exactly-once script; the pass then
exits 1 once and sets m10_outbox_republished.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from m10jobs.edges import db
from m10jobs.edges.outbox_stream import Entry, Publisher, Wait, published_key
from m10jobs.edges.queries import query
from m10jobs.edges.streams import ServerInfo, describe, server_info
from m10jobs.errors import ConfigError, DependencyUnavailable

if TYPE_CHECKING:
    import psycopg
    import redis

    from m10jobs.jobs.outbox.settings import OutboxSettings
    from m10jobs.runner import PassContext

MGET_CHUNK = 1000


def check(ctx: PassContext, s: OutboxSettings, info: ServerInfo, url: str) -> Wait:
    """Refuse (78/69) or warn at pass start; what each publish call must wait for."""
    where = describe(url)
    gauges(ctx, info)
    if info.role != "master":
        raise ConfigError(
            f"Redis at {where} is a replica (role {info.role}): the outbox must write to the "
            "primary; point M10_REDIS_URL at it, or use redis+sentinel://... to follow it"
        )
    if not info.durable:
        what = (
            f"Redis at {where} does not keep what it acknowledges ({info.persistence()}): "
            "a restart loses published events"
        )
        if s.require_aof:
            raise ConfigError(
                f"{what}; set appendonly yes and appendfsync everysec (or always) in "
                "redis.conf, or outbox.require_aof = false to publish anyway"
            )
        ctx.log.warning(
            "%s; set appendonly yes + appendfsync everysec, or outbox.require_aof = true "
            "to refuse (lost events are reconciled from replay_log)",
            what,
        )
    if info.replicas < s.min_replicas:
        raise DependencyUnavailable(
            f"Redis at {where} has {info.replicas} connected replica(s), outbox.min_replicas "
            f"is {s.min_replicas}: nothing published; bring a replica back or lower the setting"
        )
    return Wait(s.min_replicas, s.replica_timeout_ms, local_aof=info.aof and info.has_waitaof)


def gauges(ctx: PassContext, info: ServerInfo) -> None:
    """What the pass found of Redis, for the M10Redis* alerts (set before any refusal)."""
    ctx.gauge("m10_redis_primary", info.role == "master", "1 when the outbox's Redis is a primary.")
    ctx.gauge(
        "m10_redis_durable",
        info.durable,
        "1 when the outbox's Redis keeps what it acknowledges (AOF, fsync everysec/always).",
    )
    ctx.gauge(
        "m10_redis_connected_replicas", info.replicas, "Replicas connected to the outbox's Redis."
    )


class Watch:
    """Which Redis server the pass writes to; a change means it may have lost writes."""

    def __init__(self, client: redis.Redis, info: ServerInfo) -> None:
        self.client = client
        self.info = info

    def changed(self, run_id: str) -> bool:
        """True once for a run_id other than the last seen (the server restarted or
        another was promoted)."""
        if not run_id or run_id == self.info.run_id:
            return False
        self.info = server_info(self.client)
        return True

    def poll(self) -> bool:
        """Ask the server (a dependency check each linger tick: unreachable -> the
        caller's translated() makes it 69); whether it changed."""
        run_id = self.client.info("server").get("run_id", "")
        return self.changed(str(run_id))


def lost_newest(ctx: PassContext, s: OutboxSettings, client: redis.Redis) -> bool:
    """The steady-state check: the newest published event's dedup key is gone."""
    row = ctx.conn.execute(
        query("outbox_newest_published"), {"ttl": s.dedup_ttl_seconds}
    ).fetchone()
    return row is not None and not client.exists(published_key(s.dedup_key_prefix, row["event_id"]))


def reconcile(
    ctx: PassContext,
    s: OutboxSettings,
    publisher: Publisher,
    commit_conn: psycopg.Connection[Any],
    why: str,
) -> int:
    """Append again the events of the window whose dedup keys Redis lost; how many."""
    if not s.reconcile_window_seconds:
        ctx.log.error("%s; outbox.reconcile_window_seconds = 0: not reconciled", why)
        return 0
    ids = [
        r["event_id"]
        for r in ctx.conn.execute(
            query("outbox_reconcile_window"),
            {"window": s.reconcile_window_seconds, "limit": s.reconcile_max_events},
        )
    ]
    missing: list[int] = []
    client = publisher.client
    for start in range(0, len(ids), MGET_CHUNK):
        chunk = ids[start : start + MGET_CHUNK]
        got = client.mget([published_key(s.dedup_key_prefix, i) for i in chunk])
        missing += [i for i, v in zip(chunk, got, strict=True) if v is None]
    republished = 0
    for start in range(0, len(missing), s.batch_size):
        rows = ctx.conn.execute(
            query("outbox_republish_fields"), {"ids": missing[start : start + s.batch_size]}
        ).fetchall()
        entries = [
            Entry(
                s.stream_for(r["event_type"]),
                published_key(s.dedup_key_prefix, r["id"]),
                r["fields"],
            )
            for r in rows
        ]
        outcomes = publisher.publish(entries)
        done = [(r, e, o) for r, e, o in zip(rows, entries, outcomes, strict=True) if o.published]
        with db.translated(ctx.dsn), commit_conn.transaction(), commit_conn.cursor() as cur:
            ctx.fence(cur)
            cur.execute(
                query("outbox_mark_republished"),
                {
                    "ids": [r["id"] for r, _, _ in done],
                    "streams": [e.stream for _, e, _ in done],
                    "entry_ids": [o.value for _, _, o in done],
                },
            )
        republished += len(done)
        for r, e, o in zip(rows, entries, outcomes, strict=True):
            if not o.published:
                ctx.log.error(
                    "event %d could not be appended again to %s: %s", r["id"], e.stream, o.value
                )
    gone = len(missing) - republished
    if missing:
        ctx.log.error(
            "%s: %d of the %d events published in the last %ds were missing from Redis; "
            "%d appended again%s",
            why,
            len(missing),
            len(ids),
            s.reconcile_window_seconds,
            republished,
            f", {gone} not (see above)" if gone else "",
        )
    else:
        ctx.log.info("%s: all %d events published in the window are in Redis", why, len(ids))
    return republished
