"""Outbox: enqueue events, drain them into Redis exactly once, a poison event
dead-lettered, synthetic traffic round trip, and the operator's view."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devenv.demo import Demo

ORDER = 30
CONFIG = """
[outbox]
max_attempts = 2
retry_base_seconds = 0

[outbox.routes]
"order.created" = "m10:orders"
"demo.poison" = "m10:demo:not-a-stream"

[synthetic_traffic]
count = 5
"""


_SHOWN = ("event_id", "event_type", "aggregate_id", "payload")


def _show_stream(d: Demo, stream: str, count: int = 3) -> None:
    import redis

    client = redis.Redis.from_url(d.stack.redis.url, decode_responses=True)
    entries = client.xrange(stream)
    d.show(
        "\n".join(
            [
                f"{stream}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}",
                *(
                    f"  {entry_id} " + " ".join(f"{k}={fields.get(k)}" for k in _SHOWN)
                    for entry_id, fields in entries[:count]
                ),
            ]
        )
    )


def run(d: Demo) -> None:
    import redis

    d.say("outbox: other layers enqueue side effects through enqueue_outbox()")
    for i in range(3):
        d.sql(
            "SELECT m10_recovery.enqueue_outbox('order.created', %s::jsonb, 'order', %s, %s)",
            (json.dumps({"order": i, "amount": 10 * i}), str(i), f"order-created-{i}"),
        )
    d.sql(
        "SELECT m10_recovery.enqueue_outbox('order.created', '{}'::jsonb, 'order', '0', "
        "'order-created-0')"
    )  # a repeated idempotency key: no second event
    d.sql("SELECT m10_recovery.enqueue_outbox('user.signed_up', '{\"user\": 7}'::jsonb)")
    redis.Redis.from_url(d.stack.redis.url).set("m10:demo:not-a-stream", "x")
    d.sql("SELECT m10_recovery.enqueue_outbox('demo.poison', '{}'::jsonb, 'order', '9')")
    d.run("m10", "outbox", "status")

    d.say(
        "one pass publishes what it can; the poison event (its stream key is not a "
        "stream) is retried with backoff"
    )
    d.run("m10-outbox-processor")
    _show_stream(d, "m10:orders")
    _show_stream(d, "m10:outbox")
    d.say("after max_attempts it goes to the dead-letter stream and dead_letter_archive")
    d.run("m10-outbox-processor")
    _show_stream(d, "m10:dead_letter", 1)
    d.run("m10", "outbox", "problems")

    d.say("synthetic traffic: enqueue probes, publish them, verify the round trip")
    d.run("m10-synthetic-traffic")
    d.run("m10-outbox-processor")
    d.run("m10-synthetic-traffic")
    d.run("m10", "outbox", "status")
