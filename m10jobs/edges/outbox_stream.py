"""Exactly-once appends to Redis Streams (docs/contract.md, "Outbox and Redis
streams"), shared by the outbox processor and the dead-letter tooling.

Redis 7 has no idempotent XADD, so a Lua script does it: for each entry it
looks up a dedup key; if present it returns the stream entry id recorded
there, else it XADDs and records the new id under the dedup key with a TTL,
all in one atomic script run.  A publisher killed after the script ran but
before PostgreSQL committed therefore gets the same entry ids back on the next
pass instead of appending twice.

Limits of the guarantee: it holds while the dedup key lives (``dedup_ttl``,
default 7 days, far above the retry horizon) and while Redis keeps what it
acknowledged (AOF with fsync, no failover to a replica that missed the
write).  Consumers still dedupe on ``event_id`` if they need end-to-end
exactly-once processing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis
import redis.exceptions

# The fields of every outbox stream entry (docs/contract.md, "Outbox and Redis
# streams"); a dead-letter entry adds REASON and ATTEMPTS.
OUTBOX_FIELDS = (
    "event_id",
    "idempotency_key",
    "event_type",
    "aggregate_type",
    "aggregate_id",
    "payload",
    "created_at",
)

# KEYS: stream_1, dedup_1, stream_2, dedup_2, ...
# ARGV: dedup_ttl, trim_kind ('' | MAXLEN | MINID), trim_value, and one JSON array with,
#       per entry, [order_key, [field, value, field, value, ...]]: one argument to encode
#       instead of ~20 per entry, which made redis-py's packing the bottleneck.
# Returns one string: first the server's run_id (which instance wrote: a restart or
# failover changes it), then a line per entry: "o<id>" appended, "d<id>" appended earlier,
# "e<error>" XADD failed, "b" held back.  A dup refreshes its dedup key's TTL: a write, so
# a WAIT after a call of dups still waits for the replication of the earlier append.
# READONLY (a demoted primary) aborts the call: no entry is marked failed for it.
# A failed XADD holds back the later entries with the same non-empty order_key.
# The dedup keys are read with MGET (a key written earlier in the same call counts too),
# and each stream appended to is trimmed once per call rather than at every XADD: a
# third less work in Redis; a stream may exceed its MAXLEN by one call's entries.
PUBLISH_ONCE_LUA = r"""
local ttl = tonumber(ARGV[1])
local trim_kind, trim_value = ARGV[2], ARGV[3]
if trim_kind == 'MINID' then
  local now = redis.call('TIME')
  trim_value = tostring(tonumber(now[1]) * 1000 - tonumber(trim_value))
end
local batch = cjson.decode(ARGV[4])
local n = #batch
local existing = {}
for from = 1, n, 500 do  -- unpack() has a stack limit
  local keys = {}
  for i = from, math.min(n, from + 499) do keys[#keys + 1] = KEYS[2 * i] end
  local got = redis.call('MGET', unpack(keys))
  for j = 1, #got do existing[from + j - 1] = got[j] end
end
local failed, results, written, appended = {}, {}, {}, {}
for i = 1, n do
  local stream, dedup = KEYS[2 * i - 1], KEYS[2 * i]
  local order_key, fields = batch[i][1], batch[i][2]
  local earlier = written[dedup] or existing[i]
  if order_key ~= '' and failed[order_key] then
    results[i] = 'b'
  elseif earlier then
    redis.call('EXPIRE', dedup, ttl)
    results[i] = 'd' .. earlier
  else
    local id = redis.pcall('XADD', stream, '*', unpack(fields))
    if type(id) == 'table' and id.err and string.sub(id.err, 1, 8) == 'READONLY' then
      return redis.error_reply(id.err)
    elseif type(id) == 'table' and id.err then
      results[i] = 'e' .. string.gsub(id.err, '\n', ' ')
      if order_key ~= '' then failed[order_key] = true end
    else
      redis.call('SET', dedup, id, 'EX', ttl)
      written[dedup] = id
      appended[stream] = true
      results[i] = 'o' .. id
    end
  end
end
if trim_kind ~= '' then
  for stream in pairs(appended) do
    redis.pcall('XTRIM', stream, trim_kind, '~', trim_value)
  end
end
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
return run_id .. '\n' .. table.concat(results, '\n')
"""

_STATUS = {"o": "ok", "d": "dup", "e": "err", "b": "blocked"}

Status = Literal["ok", "dup", "err", "blocked"]


@dataclass(frozen=True)
class Entry:
    """One entry to append at most once, identified by its dedup key."""

    stream: str
    dedup_key: str
    fields: Sequence[tuple[str, str]] | str
    """(field, value) pairs, or already as the JSON array [field, value, ...] (the outbox
    claim query builds it in PostgreSQL: far cheaper than building it here)."""
    order_key: str = ""
    """Entries sharing a non-empty order key: a failure holds back the later ones."""


@dataclass(frozen=True)
class Outcome:
    status: Status
    """ok: appended now; dup: appended by an earlier run; err: XADD failed; blocked: held back."""
    value: str
    """The stream entry id (ok, dup) or the error (err)."""

    @property
    def published(self) -> bool:
        return self.status in ("ok", "dup")


@dataclass(frozen=True)
class Trim:
    """Stream trimming applied with each XADD (approximate, so it stays cheap)."""

    kind: Literal["MAXLEN", "MINID"]
    value: int
    """MAXLEN: entries to keep; MINID: age in milliseconds of the oldest entry to keep."""


@dataclass(frozen=True)
class Wait:
    """What every publish call waits for before its outcomes count as acknowledged."""

    replicas: int
    """WAIT: this many replicas have the call's writes (0: no WAIT)."""
    timeout_ms: int
    local_aof: bool = False
    """WAITAOF 1 0: the primary fsynced them to its AOF (Redis >= 7.2 with AOF on)."""


class NotAcknowledged(Exception):
    """A publish call's writes did not reach the replicas (or the AOF) in time: its
    outcomes must not be committed as published (the appends stay, and the dedup keys
    give the same entry ids back to the next attempt)."""


class Publisher:
    """Appends batches of entries with one script call per batch.

    An order key that failed stays failed for the life of the publisher (one pass):
    later entries with that key are held back until release() is called for it.
    With `wait`, each call is followed, on the same connection (one pipeline, one
    round trip), by WAIT/WAITAOF; too few acknowledgements raise NotAcknowledged."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        dedup_ttl_s: int,
        trim: Trim | None = None,
        max_per_call: int = 1000,
        max_bytes_per_call: int = 32 << 20,
        wait: Wait | None = None,
    ) -> None:
        self.client = client
        self.max_bytes_per_call = max_bytes_per_call
        self.dedup_ttl_s = dedup_ttl_s
        self.trim = trim
        self.max_per_call = max_per_call
        self.wait = wait if wait and (wait.replicas or wait.local_aof) else None
        self.failed: set[str] = set()
        self.run_id = ""
        """run_id of the server that ran the last call."""
        self._script = client.register_script(PUBLISH_ONCE_LUA)

    def release(self, order_keys: set[str]) -> None:
        """Let entries with these order keys through again (their blocker is resolved)."""
        self.failed -= order_keys

    def publish(self, entries: Sequence[Entry]) -> list[Outcome]:
        """Outcomes in the order of entries."""
        outcomes: list[Outcome] = []
        for chunk in self._chunks(entries):
            send = [not (e.order_key and e.order_key in self.failed) for e in chunk]
            todo = [e for e, s in zip(chunk, send, strict=True) if s]
            results = iter(self._call(todo) if todo else [])
            for e, s in zip(chunk, send, strict=True):
                o = next(results) if s else Outcome("blocked", "")
                if o.status == "err" and e.order_key:
                    self.failed.add(e.order_key)
                outcomes.append(o)
        return outcomes

    def _chunks(self, entries: Sequence[Entry]) -> list[Sequence[Entry]]:
        """Calls of at most max_per_call entries and about max_bytes_per_call bytes, so
        a batch of large payloads stays far below Redis's 512 MB argument limit."""
        chunks: list[Sequence[Entry]] = []
        start, size = 0, 0
        for i, e in enumerate(entries):
            n = (
                len(e.fields)
                if isinstance(e.fields, str)
                else sum(len(f) + len(v) for f, v in e.fields)
            )
            if i > start and (i - start >= self.max_per_call or size + n > self.max_bytes_per_call):
                chunks.append(entries[start:i])
                start, size = i, 0
            size += n
        if start < len(entries):
            chunks.append(entries[start:])
        return chunks

    def _call(self, entries: Sequence[Entry]) -> list[Outcome]:
        keys: list[str] = []
        items: list[str] = []
        # ensure_ascii=False: UTF-8 passes through cjson byte for byte.
        for e in entries:
            keys += (e.stream, e.dedup_key)
            fields = (
                e.fields
                if isinstance(e.fields, str)
                else json.dumps([x for pair in e.fields for x in pair], ensure_ascii=False)
            )
            items.append(f"[{json.dumps(e.order_key, ensure_ascii=False)},{fields}]")
        args = [
            self.dedup_ttl_s,
            self.trim.kind if self.trim else "",
            self.trim.value if self.trim else 0,
            f"[{','.join(items)}]",
        ]
        raw = self._script(keys=keys, args=args) if self.wait is None else self._waited(keys, args)
        self.run_id, *lines = _text(raw).split("\n")
        return [Outcome(_STATUS[line[0]], line[1:]) for line in lines]  # type: ignore[arg-type]

    def _waited(self, keys: list[str], args: list[Any]) -> Any:
        """The script, then WAIT (and WAITAOF) on the same connection: WAIT counts the
        writes of its own connection only."""
        assert self.wait is not None
        w = self.wait
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            pipe.evalsha(self._script.sha, len(keys), *keys, *args)
            if w.local_aof:
                pipe.execute_command("WAITAOF", 1, 0, w.timeout_ms)
            if w.replicas:
                pipe.execute_command("WAIT", w.replicas, w.timeout_ms)
            try:
                raw, *acks = pipe.execute()
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                self.client.script_load(PUBLISH_ONCE_LUA)
                continue
            if w.local_aof and int(acks.pop(0)[0]) < 1:
                raise NotAcknowledged(f"the AOF fsync did not happen within {w.timeout_ms} ms")
            if w.replicas and int(acks[0]) < w.replicas:
                raise NotAcknowledged(
                    f"{acks[0]} of {w.replicas} replica(s) acknowledged within {w.timeout_ms} ms"
                )
            return raw
        raise AssertionError("unreachable")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def published_key(prefix: str, event_id: int) -> str:
    """Dedup key of an outbox event's publish."""
    return f"{prefix}{event_id}"


def dead_letter_key(prefix: str, event_id: int, generation: int) -> str:
    """Dedup key of an event's n-th dead-lettering (a hand retry may dead-letter it again)."""
    return f"{prefix}dl:{event_id}:{generation}"


def field_pairs(fields: Sequence[tuple[str, str]] | str) -> list[tuple[str, str]]:
    """An entry's fields as (field, value) pairs, also when given as a JSON array."""
    if not isinstance(fields, str):
        return list(fields)
    flat = json.loads(fields)
    return list(zip(flat[::2], flat[1::2], strict=True))
