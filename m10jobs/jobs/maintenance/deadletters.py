"""Dead-letter tasks of m10-maintenance: route, archive, reconcile.

All three take the lease `dl_reconcile` (one after the other): the dead-letter
pipeline is one lock domain, so a second host never routes, archives or
replays the same entries concurrently, and the contract's lock names stay
exactly those of the seed.

- route:     pending entries of configured (stream, group) pairs whose delivery
             count or idle time passes the limits are copied to the dead-letter
             stream and ACKed by one Lua script: Redis runs it atomically, so a
             crash of this process can never split the copy from the ACK.
- archive:   dead-letter stream entries -> dead_letter_archive (idempotent by
             (dl_stream, dl_entry_id)), committed, and only then XDEL'ed.
- reconcile: each unreconciled row becomes already_processed, replayed (through
             enqueue_outbox with key <lineage>#replay<n>) or abandoned past the cap; a
             duplicate of a reconciled dead letter (same event and source entry) takes
             its twin's outcome instead of being replayed twice.  A dead letter that a
             replay would fail the same way (refused for its size, or without an
             event type or a JSON payload) is abandoned at once with its refusal
             recorded, never replayed: only an operator settles it (`m10 dl discard`).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis
from psycopg.types.json import Jsonb

from m10jobs.edges import streams
from m10jobs.edges.queries import one, query
from m10jobs.errors import TaskFailed
from m10jobs.jobs.maintenance.settings import DeadLetterSettings
from m10jobs.jobs.outbox.settings import OutboxSettings

if TYPE_CHECKING:
    import psycopg

    from m10jobs.config import Config
    from m10jobs.runner import PassContext

MAX_PAGES = 50
RESERVED = ("reason", "attempts", "source_stream", "source_entry_id", "source_group")
REFUSALS = ("size", "shape")  # dead_letter_archive.refusal (migration 090)

# KEYS: source stream, dead-letter stream.  ARGV: group, entry id, reason, attempts.
# Copies the entry (if it is still pending for the group) and ACKs it, atomically.
ROUTE_LUA = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 then return false end
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
local args = {KEYS[2], '*'}
if #found > 0 then
  local f = found[1][2]
  for i = 1, #f, 2 do
    local k = f[i]
    if k ~= 'reason' and k ~= 'attempts' and k ~= 'source_stream'
       and k ~= 'source_entry_id' and k ~= 'source_group' then
      args[#args + 1] = k
      args[#args + 1] = f[i + 1]
    end
  end
end
local reason = ARGV[3]
if #found == 0 then reason = reason .. '; entry was trimmed from the stream' end
for _, kv in ipairs({{'reason', reason}, {'attempts', ARGV[4]}, {'source_stream', KEYS[1]},
                     {'source_entry_id', ARGV[2]}, {'source_group', ARGV[1]}}) do
  args[#args + 1] = kv[1]
  args[#args + 1] = kv[2]
end
local dl_id = redis.call('XADD', unpack(args))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return dl_id
"""


def settings(config: Config) -> DeadLetterSettings:
    return config.settings(DeadLetterSettings)


def _redis(ctx: PassContext) -> Any:
    return streams.client(ctx.config.redis_url)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# -- route -------------------------------------------------------------------
def over_limit(entry: dict[str, Any], st: DeadLetterSettings) -> str | None:
    """Why a pending entry is dead, or None while it may still be processed."""
    if entry["times_delivered"] >= st.max_deliveries:
        return f"delivered {entry['times_delivered']} times (limit {st.max_deliveries})"
    if st.max_idle_ms and entry["time_since_delivered"] >= st.max_idle_ms:
        return (
            f"idle {entry['time_since_delivered'] // 1000}s since last delivery "
            f"(limit {st.max_idle_ms // 1000}s)"
        )
    return None


def route(ctx: PassContext) -> dict[str, Any]:
    st = settings(ctx.config)
    r = _redis(ctx)
    script = r.register_script(ROUTE_LUA)
    routed = would = 0
    per_source: dict[str, int] = {}
    with streams.translated(ctx.config.redis_url):
        for src in st.sources:
            start, n = "-", 0
            for _ in range(MAX_PAGES):
                try:
                    page = r.xpending_range(src.stream, src.group, start, "+", st.batch_size)
                except redis.ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    ctx.log.warning(
                        "stream %s has no consumer group %s yet; nothing to route",
                        src.stream,
                        src.group,
                    )
                    break
                for entry in page:
                    reason = over_limit(entry, st)
                    if reason is None:
                        continue
                    entry_id = _text(entry["message_id"])
                    if ctx.dry_run:
                        would += 1
                        continue
                    ctx.check()
                    dl_id = script(
                        keys=[src.stream, st.stream],
                        args=[src.group, entry_id, reason, entry["times_delivered"]],
                    )
                    if dl_id:
                        n += 1
                        ctx.log.warning(
                            "dead-lettered %s %s: %s",
                            src.stream,
                            entry_id,
                            reason,
                            extra={"dl_entry_id": _text(dl_id)},
                        )
                if len(page) < st.batch_size:
                    break
                start = "(" + _text(page[-1]["message_id"])
            per_source[f"{src.stream}/{src.group}"] = n
            routed += n
    if ctx.dry_run:
        return {"would_route": would}
    ctx.gauge("m10_dead_letters_routed", routed, "Entries moved to the dead-letter stream.")
    return {"routed": routed, "sources": per_source}


# -- archive -----------------------------------------------------------------
def lineage_of(
    idempotency_key: str | None, event_id: int | None, dl_stream: str, dl_entry_id: str
) -> str:
    """The root key of an event's replay chain (see 020_maintenance.sql)."""
    if idempotency_key:
        return re.sub(r"#replay\d+$", "", idempotency_key)
    if event_id is not None:
        return f"event:{event_id}"
    return f"dl:{dl_stream}:{dl_entry_id}"


def archive_row(dl_stream: str, entry_id: str, raw: dict[Any, Any]) -> dict[str, Any]:
    """A dead-letter stream entry as a dead_letter_archive row."""
    fields = {_text(k): _text(v) for k, v in raw.items()}
    event_id = int(fields["event_id"]) if fields.get("event_id", "").isdigit() else None
    attempts = fields.get("attempts", "")
    ms = int(entry_id.split("-")[0]) if entry_id.split("-")[0].isdigit() else None
    key = fields.get("idempotency_key") or None
    return {
        "dl_stream": dl_stream,
        "dl_entry_id": entry_id,
        "source_stream": fields.get("source_stream"),
        "source_entry_id": fields.get("source_entry_id"),
        "event_id": event_id,
        "idempotency_key": key,
        "event_type": fields.get("event_type") or None,
        "aggregate_type": fields.get("aggregate_type") or None,
        "aggregate_id": fields.get("aggregate_id") or None,
        "payload": fields.get("payload"),
        "fields": Jsonb(fields),
        "reason": fields.get("reason") or "unknown",
        "delivery_count": int(attempts) if attempts.isdigit() else None,
        "dead_lettered_at": datetime.fromtimestamp(ms / 1000, UTC) if ms else None,
        "lineage_key": lineage_of(key, event_id, dl_stream, entry_id),
        "refusal": fields.get("refusal") if fields.get("refusal") in REFUSALS else None,
    }


def archive(ctx: PassContext) -> dict[str, Any]:
    st = settings(ctx.config)
    r = _redis(ctx)
    archived = 0
    with streams.translated(ctx.config.redis_url):
        if ctx.dry_run:
            return {"would_archive": r.xlen(st.stream)}
        for _ in range(MAX_PAGES):
            ctx.check()
            entries = r.xrange(st.stream, "-", "+", st.batch_size)
            if not entries:
                break
            ids = [_text(eid) for eid, _ in entries]
            with ctx.conn.transaction(), ctx.conn.cursor() as cur:
                for eid, raw in entries:
                    cur.execute(query("dl_archive_insert"), archive_row(st.stream, _text(eid), raw))
                    archived += cur.rowcount
                ctx.fence(cur)
            r.xdel(st.stream, *ids)  # only after the rows are committed
            if len(entries) < st.batch_size:
                break
    ctx.gauge("m10_dead_letters_archived", archived, "Dead letters stored in the archive.")
    return {"archived": archived}


# -- reconcile ---------------------------------------------------------------
def replay(cur: psycopg.Cursor[Any], row: dict[str, Any], attempt: int) -> int:
    """Re-enqueue a dead letter through the outbox as <lineage>#replay<attempt>; the
    outbox id.  The same attempt always uses the same key, so a retry is a no-op."""
    payload = json.loads(row["payload"]) if row["payload"] is not None else None

    key = f"{row['lineage_key']}#replay{attempt}"
    out = one(
        cur.execute(
            query("dl_enqueue_replay"),
            {
                "event_type": row["event_type"],
                "payload": Jsonb(payload),
                "aggregate_type": row["aggregate_type"],
                "aggregate_id": row["aggregate_id"],
                "idempotency_key": key,
            },
        )
    )
    record(cur, row["id"], "replayed", attempt, out["id"])
    return int(out["id"])


def record(
    cur: psycopg.Cursor[Any],
    row_id: int,
    outcome: str,
    attempts: int,
    replay_event_id: int | None,
    refusal: str | None = None,
) -> None:
    cur.execute(
        query("dl_record_outcome"),
        {
            "id": row_id,
            "outcome": outcome,
            "attempts": attempts,
            "replay_event_id": replay_event_id,
            "refusal": refusal,
        },
    )


def payload_limit(config: Config) -> int:
    """outbox.max_payload_bytes: a larger payload is never fetched (dl_unreconciled,
    dl_select) nor replayed, since the outbox processor would refuse it again."""
    return config.settings(OutboxSettings).max_payload_bytes


def refused(row: dict[str, Any], max_payload_bytes: int) -> tuple[str, str] | None:
    """(refusal, why) when a replay would fail the same way again: 'size' (the processor
    refuses the payload) or 'shape' (no event type, no payload, not JSON); else None.
    The row comes from dl_unreconciled or dl_select (payload_bytes, payload if small)."""
    size = row["payload_bytes"]
    if row["refusal"] == "size" or (size is not None and size > max_payload_bytes):
        return "size", (
            f"its payload of {size if size is not None else '?'} bytes was refused for its "
            f"size (outbox.max_payload_bytes is {max_payload_bytes}) and would be again"
        )
    if not row["event_type"]:
        return "shape", "it has no event_type"
    if row["payload"] is None:
        return "shape", "it has no payload"
    try:
        json.loads(row["payload"])
    except ValueError:
        return "shape", "its payload is not JSON"
    return None


def settle_hint(row: dict[str, Any], refusal: str) -> str:
    """What an operator can do with a dead letter that cannot be replayed."""
    discard = f"`m10 dl discard {row['id']} --reason TEXT`"
    if refusal == "size" and row["event_id"] is not None:
        return (
            f"the payload is outbox event {row['event_id']}: raise outbox.max_payload_bytes "
            f"and run `m10 outbox retry {row['event_id']}`, or settle it with {discard}"
        )
    return f"settle it with {discard}"


def decide(
    cur: psycopg.Cursor[Any],
    row: dict[str, Any],
    st: DeadLetterSettings,
    ctx: PassContext,
    max_payload_bytes: int,
) -> str:
    """Reconcile one archived dead letter; its outcome (recorded on the row)."""
    done = cur.execute(query("dl_processed_elsewhere"), row).fetchone()
    if done is not None:
        record(cur, row["id"], "already_processed", row["reconcile_attempts"], done["event_id"])
        ctx.log.info(
            "dead letter %s: event was published after all (%s %s)",
            row["id"],
            done["stream"],
            done["stream_entry_id"],
        )
        return "already_processed"
    twin = cur.execute(query("dl_duplicate_of"), row).fetchone()
    if twin is not None:
        outcome = "abandoned" if twin["reconcile_outcome"] == "abandoned" else "already_processed"
        record(cur, row["id"], outcome, twin["reconcile_attempts"], twin["replay_event_id"])
        ctx.log.info(
            "dead letter %s is a duplicate of %s (%s): %s",
            row["id"],
            twin["id"],
            twin["reconcile_outcome"],
            outcome,
        )
        return outcome
    replays = one(cur.execute(query("dl_replays_done"), row))["n"]
    refusal = refused(row, max_payload_bytes)
    if refusal is not None:
        record(cur, row["id"], "abandoned", replays, None, refusal[0])
        ctx.log.error(
            "dead letter %s (%s, key %s) ABANDONED, not replayed: %s; %s",
            row["id"],
            row["event_type"],
            row["idempotency_key"],
            refusal[1],
            settle_hint(row, refusal[0]),
        )
        return "abandoned"
    if replays >= st.max_replays:
        record(cur, row["id"], "abandoned", replays, None)
        ctx.log.error(
            "dead letter %s (%s, key %s) ABANDONED: replay cap reached (%s of %s); inspect "
            "it with `m10 dl list --outcome abandoned` and replay by hand with "
            "`m10 dl replay %s`, or settle it with `m10 dl discard %s --reason TEXT`",
            row["id"],
            row["event_type"],
            row["idempotency_key"],
            replays,
            st.max_replays,
            row["id"],
            row["id"],
        )
        return "abandoned"
    new_id = replay(cur, row, replays + 1)
    ctx.log.info(
        "dead letter %s replayed as outbox event %s (replay %d of %d)",
        row["id"],
        new_id,
        replays + 1,
        st.max_replays,
    )
    return "replayed"


def reconcile(ctx: PassContext) -> dict[str, Any]:
    st = settings(ctx.config)
    if ctx.dry_run:
        return {"would_reconcile": one(ctx.conn.execute(query("dl_count_unreconciled")))["n"]}
    limit = payload_limit(ctx.config)
    counts = {"already_processed": 0, "replayed": 0, "abandoned": 0}
    for _ in range(MAX_PAGES):
        ctx.check()
        with ctx.conn.transaction(), ctx.conn.cursor() as cur:
            rows = cur.execute(
                query("dl_unreconciled"), {"limit": st.batch_size, "max_payload_bytes": limit}
            ).fetchall()
            for row in rows:
                counts[decide(cur, row, st, ctx, limit)] += 1
            ctx.fence(cur)
        if len(rows) < st.batch_size:
            break
    for outcome, n in counts.items():
        ctx.gauge(
            "m10_dead_letters_reconciled", n, "Dead letters reconciled by outcome.", outcome=outcome
        )
    # From the table, not this run's counter: stays set until each one is replayed or
    # discarded by hand.
    abandoned = one(ctx.conn.execute(query("dl_count_abandoned")))["n"]
    ctx.gauge(
        "m10_dead_letters_abandoned",
        abandoned,
        "Dead letters abandoned (replay cap or unreplayable), not yet replayed or "
        "discarded by hand.",
    )
    if abandoned:
        raise TaskFailed(
            f"{abandoned} dead letter(s) are abandoned and need a decision: "
            "inspect them with `m10 dl list --outcome abandoned`, replay them with "
            "`m10 dl replay ID` (or `--outcome abandoned`) or settle each with "
            "`m10 dl discard ID --reason TEXT` (this pass reconciled the others)",
            {**counts, "abandoned_total": abandoned},
        )
    return counts
