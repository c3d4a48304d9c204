"""Helpers for the maintenance tests: config files, running one task, reading its summary."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg.rows import dict_row

DEFAULT_TOML = """
[dead_letter]
stream = "m10:dead_letter"
max_deliveries = 3
max_idle_seconds = 0
batch_size = 100
max_replays = 2
[[dead_letter.sources]]
stream = "m10:outbox"
group = "workers"
"""


def write_config(tmp_path: Path, extra: str = "", base: str = DEFAULT_TOML) -> Path:
    path = tmp_path / "m10jobs.toml"
    path.write_text(base + "\n" + extra)
    return path


def summary(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON summary line the runner prints on stdout."""
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no summary (exit {proc.returncode}); stderr:\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1])


def task(proc: subprocess.CompletedProcess[str], name: str) -> dict[str, Any]:
    found = [t for t in summary(proc)["tasks"] if t["task"] == name]
    assert found, f"task {name} not in summary: {proc.stdout}"
    return found[0]


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def deliver(r: redis.Redis, stream: str, group: str, times: int, consumer: str = "c1") -> None:
    """Read the group's new entries once, then re-read its pending history times-1 more
    times: real delivery counts, as a crashing consumer would leave them."""
    r.xreadgroup(group, consumer, {stream: ">"})
    for _ in range(times - 1):
        r.xreadgroup(group, consumer, {stream: "0"})


def event_fields(
    event_id: int, key: str | None, payload: str = '{"n": 1}', event_type: str = "order.created"
) -> dict[str, str]:
    return {
        "event_id": str(event_id),
        "idempotency_key": key or "",
        "event_type": event_type,
        "aggregate_type": "order",
        "aggregate_id": str(event_id),
        "payload": payload,
        "created_at": "2026-01-01T00:00:00Z",
    }


def chunk_rows(conn: psycopg.Connection[Any], data: bytes) -> list[dict[str, Any]]:
    """A retention chunk's rows, read back as `m10 retention show` reads them."""
    from m10jobs.jobs.maintenance.chunks import CHUNK_SUFFIX, load_chunk, open_chunk

    with conn.transaction():
        load_chunk(conn, "chunk" + CHUNK_SUFFIX, open_chunk("chunk" + CHUNK_SUFFIX, data))
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute("SELECT * FROM chunk").fetchall()
