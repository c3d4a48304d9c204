"""Helpers for the outbox tests: enqueue events, read streams, write a config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import redis


def enqueue(
    conn: psycopg.Connection[Any],
    n: int,
    *,
    event_type: str = "test.event",
    aggregate: tuple[str, str] | None = None,
    payload: dict[str, Any] | None = None,
    key_prefix: str | None = None,
) -> list[int]:
    """n events through enqueue_outbox(); their ids."""
    ids = []
    for i in range(n):
        row = conn.execute(
            "SELECT m10_recovery.enqueue_outbox(%s, %s::jsonb, %s, %s, %s) AS id",
            (
                event_type,
                json.dumps(payload if payload is not None else {"i": i}),
                aggregate[0] if aggregate else None,
                aggregate[1] if aggregate else None,
                f"{key_prefix}:{i}" if key_prefix else None,
            ),
        ).fetchone()
        ids.append(row["id"])
    return ids


def bulk_enqueue(conn: psycopg.Connection[Any], n: int, *, aggregates: int = 0) -> None:
    """n events in one statement (fast setup for big backlogs)."""
    conn.execute(
        "INSERT INTO m10_recovery.outbox (event_type, aggregate_type, aggregate_id, payload, "
        "idempotency_key) SELECT 'bulk.event', CASE WHEN %(a)s > 0 THEN 'order' END, "
        "CASE WHEN %(a)s > 0 THEN (g %% %(a)s)::text END, "
        "jsonb_build_object('n', g, 'pad', repeat('x', 100)), 'bulk:' || g "
        "FROM generate_series(1, %(n)s) g",
        {"n": n, "a": aggregates},
    )


def entries(redis_url: str, stream: str) -> list[dict[str, str]]:
    """Every entry of a stream as a dict of decoded fields plus '_id'."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return [{"_id": eid, **fields} for eid, fields in client.xrange(stream)]
    finally:
        client.close()


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m10jobs.toml"
    path.write_text(text)
    return path


def summary(stdout: str) -> dict[str, Any]:
    """The task summary from the runner's JSON line on stdout."""
    line = json.loads(stdout.strip().splitlines()[-1])
    return line["tasks"][0].get("summary", {}) if line["tasks"] else {}
