"""The outbox flow: m10-outbox-processor drains m10_recovery.outbox into Redis Streams.

process.py is the pass (imported when it runs), settings.py the [outbox] table
and the shared names.
"""

from m10jobs.jobs.outbox.settings import DEAD_LETTER_STREAM, LOCK, STREAM, OutboxSettings
from m10jobs.registry import Flow, Job

JOB = Job(
    script="m10-outbox-processor",
    summary="Drain m10_recovery.outbox into Redis Streams exactly once, recording replay_log.",
    example="m10-outbox-processor --dry-run",
    schedule="minutely",
    jitter_seconds=0,  # lingering passes hand over at the minute boundary (linger_for)
    timer_accuracy="1ms",  # ... and the next pass starts right at it, not up to 1 s later
    lock=LOCK,
    run="m10jobs.jobs.outbox.process:process",
    after=("postgresql.service", "redis-server.service"),
    wants=("network-online.target",),
    produces=(
        Flow("lock", LOCK, "m10_recovery.distributed_locks", "Single-leader outbox processing",
             ("m10 outbox status",)),
        Flow("checkpoint", "replay_log", "m10_recovery.replay_log", "Idempotency tracking",
             ("dl_reconcile", "retention_cleanup")),
        Flow("stream", STREAM, "Redis stream (outbox.stream, outbox.routes)",
             "Published outbox events (A5 fields)"),
        Flow("stream", DEAD_LETTER_STREAM, "Redis stream (outbox.dead_letter_stream)",
             "Events that could not be published", ("dl_reconcile",)),
        Flow("checkpoint", "dead_letter_archive", "m10_recovery.dead_letter_archive",
             "DL message storage", ("dl_reconcile", "retention_cleanup", "m10 dl list")),
    ),
    consumes=("m10_recovery.outbox",),
    settings=(OutboxSettings,),
)
