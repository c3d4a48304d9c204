"""m10-synthetic-traffic: end-to-end probe of the outbox pipeline, every 30 minutes.

Each pass first checks the synthetic events of earlier runs (every pending one,
the others within `lookback_seconds`): published ones must be in their stream (unless trimmed
away since), and their publish latency is reported; any still pending after
`stall_seconds`, dead-lettered, or missing from the stream fails the pass
(exit 1: the pipeline is stalled or losing events).  Then it enqueues `count`
new synthetic events through enqueue_outbox(), as other layers do, marked
event_type 'm10.synthetic' and payload {"synthetic": true, "sent_at": ...}.
"""

from __future__ import annotations

import json
import statistics
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from m10jobs.edges import streams
from m10jobs.edges.queries import query
from m10jobs.errors import TaskFailed
from m10jobs.jobs.synthetic.settings import EVENT_TYPE, SyntheticSettings

if TYPE_CHECKING:
    import redis

    from m10jobs.runner import PassContext


def _entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _missing(client: redis.Redis, published: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Published events whose entry is not in the stream, ignoring entries trimmed away."""
    pipe = client.pipeline(transaction=False)
    for r in published:
        pipe.xrange(r["stream"], r["stream_entry_id"], r["stream_entry_id"], count=1)
    streams = sorted({r["stream"] for r in published})
    for stream in streams:
        pipe.xrange(stream, "-", "+", count=1)
    found = pipe.execute()
    first = {}
    for stream, entries in zip(streams, found[len(published) :], strict=True):
        first[stream] = _entry_key(entries[0][0].decode()) if entries else None
    return [
        r
        for r, hit in zip(published, found, strict=False)
        if not hit
        and (oldest := first[r["stream"]]) is not None
        and _entry_key(r["stream_entry_id"]) >= oldest
    ]


def synthetic(ctx: PassContext) -> dict[str, Any]:
    s = ctx.config.settings(SyntheticSettings)
    count, stall_s, lookback_s = s.count, s.stall_seconds, s.lookback_seconds

    earlier = ctx.conn.execute(query("synthetic_recent"), {"lookback": lookback_s}).fetchall()
    published = [r for r in earlier if r["status"] == "published"]
    dead = [r for r in earlier if r["status"] == "dead_lettered"]
    pending = [r for r in earlier if r["status"] == "pending"]
    stalled = [r for r in pending if r["age_s"] > stall_s]
    url = ctx.config.redis_url
    with streams.translated(url):
        missing = _missing(streams.client(url), published) if published else []
    latencies = [r["latency_s"] for r in published]
    summary: dict[str, Any] = {
        "checked": len(earlier),
        "arrived": len(published) - len(missing),
        "pending": len(pending),
        "stalled": len(stalled),
        "dead_lettered": len(dead),
        "missing_in_stream": len(missing),
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_max_s": round(max(latencies), 3) if latencies else None,
    }

    if ctx.dry_run:
        summary["would_enqueue"] = count
    else:
        sent_at = datetime.now(UTC).isoformat()  # a label in the payload; latency is SQL's
        with ctx.conn.transaction(), ctx.conn.cursor() as cur:
            ctx.fence(cur)
            for i in range(count):
                cur.execute(
                    query("synthetic_enqueue"),
                    {
                        "payload": json.dumps(
                            {"synthetic": True, "sent_at": sent_at, "run_id": ctx.run_id, "seq": i}
                        ),
                        "key": f"{EVENT_TYPE}:{ctx.run_id}:{i}",
                    },
                )
        summary["enqueued"] = count
        ctx.gauge(
            "m10_synthetic_arrived",
            summary["arrived"],
            "Earlier synthetic events found in their stream.",
        )
        ctx.gauge(
            "m10_synthetic_stalled",
            len(stalled),
            "Synthetic events still unpublished after stall_seconds.",
        )
        if latencies:
            ctx.gauge(
                "m10_synthetic_latency_max_seconds",
                max(latencies),
                "Slowest enqueue-to-publish time of earlier synthetic events.",
            )
    ctx.log.info(
        "synthetic traffic: %d event(s) enqueued; of %d earlier, %d arrived, "
        "%d pending, %d stalled",
        summary.get("enqueued", 0),
        len(earlier),
        summary["arrived"],
        len(pending),
        len(stalled),
        extra={"summary": summary},
    )
    problems = []
    if stalled:
        oldest = max(r["age_s"] for r in stalled)
        problems.append(
            f"{len(stalled)} synthetic event(s) unpublished for more than "
            f"{stall_s:.0f}s (oldest {oldest:.0f}s): the outbox pipeline is stalled"
        )
    if dead:
        problems.append(f"{len(dead)} synthetic event(s) were dead-lettered")
    if missing:
        problems.append(
            f"{len(missing)} published synthetic event(s) are missing from "
            f"their stream (first: event {missing[0]['id']})"
        )
    if problems:
        raise TaskFailed(
            "; ".join(problems) + "; check `m10 outbox status` and the m10-outbox-processor journal"
        )
    return summary
