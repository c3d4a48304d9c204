"""The outbox flow: m10-outbox-processor drains m10_recovery.outbox into Redis Streams.

process.py is the pass (imported when it runs), settings.py the [outbox] table
(named, not imported: maintenance's and synthetic traffic's declarations import the
shared names below, and neither --help builds the table).
"""

import click

from m10jobs.registry import Flow, Job

LOCK = "m10:outbox_processor"
# Default stream names (docs/contract.md, "Outbox and Redis streams"); maintenance's
# [dead_letter] defaults to the second.
STREAM = "m10:outbox"
DEAD_LETTER_STREAM = "m10:dead_letter"

JOB = Job(
    script="m10-outbox-processor",
    checks="m10jobs.jobs.outbox.health:checks",
    summary="Drain m10_recovery.outbox into Redis Streams exactly once, recording replay_log.",
    example="m10-outbox-processor --dry-run",
    schedule="minutely",  # starts the chain (at boot, after a failure); standbys try the lease
    jitter_seconds=0,  # ... at the minute, not up to 30 s later: the outage after a failure
    restart=True,  # the unit's pass lingers, then systemd starts the next one at once
    exec_args=("--linger",),
    options=(
        click.Option(
            ["--linger"],
            is_flag=True,
            help="After draining, keep the lease and LISTEN for new events for "
            "outbox.linger_seconds, then release and exit 0 (what the unit "
            "does; systemd starts the next pass at once).  Without it a pass "
            "drains and exits.",
        ),
    ),
    lock=LOCK,
    run="m10jobs.jobs.outbox.process:process",
    after=("postgresql.service", "redis-server.service"),
    wants=("network-online.target",),
    produces=(
        Flow(
            "lock",
            LOCK,
            "m10_recovery.distributed_locks",
            "Single-leader outbox processing",
            ("m10 outbox status",),
        ),
        Flow(
            "checkpoint",
            "replay_log",
            "m10_recovery.replay_log",
            "Idempotency tracking",
            ("dl_reconcile", "retention_cleanup"),
        ),
        Flow(
            "stream",
            STREAM,
            "Redis stream (outbox.stream, outbox.routes)",
            "Published outbox events (the contract's stream fields)",
        ),
        Flow(
            "stream",
            DEAD_LETTER_STREAM,
            "Redis stream (outbox.dead_letter_stream)",
            "Events that could not be published",
            ("dl_reconcile",),
        ),
        Flow(
            "checkpoint",
            "dead_letter_archive",
            "m10_recovery.dead_letter_archive",
            "DL message storage",
            ("dl_reconcile", "retention_cleanup", "m10 dl list"),
        ),
    ),
    consumes=("m10_recovery.outbox",),
    settings=("m10jobs.jobs.outbox.settings:OutboxSettings",),
)
