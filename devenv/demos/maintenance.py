"""Maintenance: a poison message travels pending -> dead letter -> archive -> reconcile,
then retention archives the reconciled row to object storage."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devenv.demo import Demo

ORDER = 30
CONFIG = """
[dead_letter]
max_deliveries = 3
max_idle_seconds = 0
max_replays = 1
[[dead_letter.sources]]
stream = "m10:outbox"
group = "demo-workers"
"""


def run(d: Demo) -> None:
    import redis

    r = redis.Redis.from_url(d.stack.redis.url, decode_responses=True)
    d.say("a consumer group reads a poison message three times and never ACKs it")
    r.xgroup_create("m10:outbox", "demo-workers", id="$", mkstream=True)
    entry = r.xadd(
        "m10:outbox",
        {
            "event_id": "900",
            "idempotency_key": "demo-poison",
            "event_type": "order.created",
            "aggregate_type": "order",
            "aggregate_id": "900",
            "payload": json.dumps({"order": 900}),
            "created_at": "2026-01-01T00:00:00Z",
        },
    )
    r.xreadgroup("demo-workers", "worker-1", {"m10:outbox": ">"})
    for _ in range(2):
        r.xreadgroup("demo-workers", "worker-1", {"m10:outbox": "0"})
    [p] = r.xpending_range("m10:outbox", "demo-workers", "-", "+", 10)
    d.show(f"pending: {entry} delivered {p['times_delivered']} times")

    d.say("dl_route: past max_deliveries -> copied to m10:dead_letter and ACKed (one Lua script)")
    d.run("m10", "run", "dl_route")
    d.show(
        f"pending now: {r.xpending('m10:outbox', 'demo-workers')['pending']}, "
        f"m10:dead_letter length: {r.xlen('m10:dead_letter')}"
    )
    d.say("dl_archive: stored in dead_letter_archive, then removed from the stream")
    d.run("m10", "run", "dl_archive")
    d.run("m10", "dl", "list")
    d.say("dl_reconcile: not processed elsewhere -> replayed through the outbox (cap 1)")
    d.run("m10", "run", "dl_reconcile")
    d.run("m10", "dl", "list")
    d.show(f"outbox: {d.sql('SELECT id, idempotency_key, status FROM m10_recovery.outbox')}")
    d.say("running it again changes nothing")
    d.run("m10", "run", "dl_reconcile")

    d.say("retention: the reconciled row, backdated 100 days, is archived to S3 and deleted")
    if d.stack.s3 is not None:
        import boto3

        from devenv.services import S3

        s3 = boto3.client(
            "s3",
            endpoint_url=d.stack.s3.endpoint_url,
            aws_access_key_id=S3.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3.env["AWS_SECRET_ACCESS_KEY"],
            region_name=S3.env["AWS_DEFAULT_REGION"],
        )
        if d.env["M10_R2_BUCKET"] not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
            s3.create_bucket(Bucket=d.env["M10_R2_BUCKET"])
    d.sql("UPDATE m10_recovery.dead_letter_archive SET reconciled_at = now() - interval '100 days'")
    d.run("m10", "run", "retention_cleanup")
    d.run("m10", "retention", "history", "--limit", "8")
    d.say("the whole orchestrator: every task in order, one JSON summary")
    d.run("m10-maintenance")
