"""[outbox] settings; the outbox's shared names (lease, default streams) are declared in
__init__ and re-exported here.

Named by the declaration in __init__, imported when the config is read or the pass
runs; still cheap: no driver imports.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from m10jobs.jobs.outbox import DEAD_LETTER_STREAM as DEAD_LETTER_STREAM
from m10jobs.jobs.outbox import LOCK as LOCK
from m10jobs.jobs.outbox import STREAM as STREAM
from m10jobs.settings import setting


@dataclass(frozen=True)
class OutboxSettings:
    """[outbox]: where events go, how failures are retried, how streams are trimmed."""

    SECTION: ClassVar[str] = "outbox"

    stream: str = setting(STREAM, "stream events go to unless routed")
    dead_letter_stream: str = setting(DEAD_LETTER_STREAM, "stream for events that gave up")
    routes: dict[str, str] = setting(
        {},
        "event_type -> stream; others go to outbox.stream",
        example={"order.created": "m10:orders"},
    )
    batch_size: int = setting(1000, "events claimed per batch", min=1, max=10_000)
    max_attempts: int = setting(
        8, "publish attempts before an event is dead-lettered", min=1, max=1000
    )
    retry_base_seconds: float = setting(5.0, "first retry delay (doubles, with jitter)", min=0)
    retry_max_seconds: float = setting(900.0, "cap of the retry delay", min=0)
    max_payload_bytes: int = setting(
        1_000_000, "larger payloads are dead-lettered at once", min=1, max=512 * 1024 * 1024
    )
    dedup_ttl_seconds: int = setting(7 * 86400, "how long the publish-once keys live", min=3600)
    dedup_key_prefix: str = setting("m10:outbox:published:", "Redis key prefix of those keys")
    trim_maxlen: int = setting(1_000_000, "XADD MAXLEN ~ per stream (0: off)", min=0)
    trim_minid_seconds: int = setting(0, "XADD MINID ~ age instead of MAXLEN (0: off)", min=0)
    time_budget_seconds: float = setting(
        200.0, "a pass stops claiming after this long (kept below the lease TTL)", min=1
    )
    linger_seconds: float = setting(
        115.0,
        "a pass run with --linger (the unit's) keeps the "
        "lease and LISTENs this long after draining, then exits "
        "and systemd starts the next (capped by the time budget)",
        min=1,
    )

    require_aof: bool = setting(
        False,
        "refuse to publish (exit 78) unless Redis runs with AOF and appendfsync everysec or "
        "always; false: warn once per pass and rely on the reconciliation",
    )
    min_replicas: int = setting(
        0,
        "replicas that must have each batch (WAIT) before it is marked published; a pass "
        "with fewer connected exits 69, a batch not acknowledged in time stays pending",
        min=0,
        max=16,
    )
    replica_timeout_ms: int = setting(
        2000, "how long a batch waits for those replicas (and WAITAOF)", min=1, max=60_000
    )
    reconcile_window_seconds: int = setting(
        86400,
        "after Redis lost data (a restart, a failover), events published this recently are "
        "checked and the lost ones appended again (0: off; below dedup_ttl_seconds)",
        min=0,
    )
    reconcile_max_events: int = setting(
        1_000_000, "at most this many of those, newest first", min=1, max=100_000_000
    )

    def problems(self) -> Iterator[str]:
        if self.reconcile_window_seconds >= self.dedup_ttl_seconds:
            yield "reconcile_window_seconds: must be below outbox.dedup_ttl_seconds"
        if self.trim_maxlen and self.trim_minid_seconds:
            yield ("trim_maxlen and outbox.trim_minid_seconds are both set; set one of them to 0")
        if (
            self.dead_letter_stream == self.stream
            or self.dead_letter_stream in self.routes.values()
        ):
            yield "dead_letter_stream: must differ from the event streams"

    def stream_for(self, event_type: str) -> str:
        return self.routes.get(event_type, self.stream)

    def retry_delay(self, failures: int) -> float:
        """Exponential backoff with a cap and 'equal jitter' (half fixed, half random)."""
        import random  # the processor's, not every start-up's (this module is on all paths)

        delay = min(self.retry_max_seconds, self.retry_base_seconds * 2 ** min(failures, 60))
        return delay / 2 + random.uniform(0, delay / 2)

    def budget(self, lease_ttl: int, job_timeout: int) -> float:
        """The pass's time budget, kept below the lease TTL and the unit's timeout."""
        return max(1.0, min(self.time_budget_seconds, lease_ttl * 0.8, job_timeout - 20))
