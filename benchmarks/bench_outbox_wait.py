"""Outbox drain with WAIT 1 against a local replica (`[outbox] min_replicas = 1`) vs
without WAIT, N events each (default 30,000; env M10_BENCH_OUTBOX_WAIT_EVENTS), the
same primary + replica for both (so replication itself costs both the same): what
durable-before-published costs.  Goal: >= 0.7x.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import redis

from benchmarks.bench_outbox import _drain, _fill
from devenv.services import Redis

if TYPE_CHECKING:
    from benchmarks.run import Bench

EVENTS = int(os.environ.get("M10_BENCH_OUTBOX_WAIT_EVENTS", "30000"))


def run(bench: Bench) -> None:
    n = EVENTS
    base = Path(tempfile.mkdtemp(prefix="m10-bench-wait-", dir=bench.stack.base))
    primary = Redis(base / "primary").start()
    replica = Redis(base / "replica", replica_of=primary.port).start()
    try:
        r = redis.Redis.from_url(primary.url)
        rates = {}
        for label, min_replicas in (("no WAIT", 0), ("WAIT 1", 1)):
            cfg = base / f"m10jobs-{min_replicas}.toml"
            cfg.write_text(f"[outbox]\nmin_replicas = {min_replicas}\n")
            dsn = bench.fresh_db()
            _fill(dsn, n)
            r.flushdb()
            r.execute_command("WAIT", 1, 10_000)  # the replica is in sync before timing
            elapsed, _, _ = _drain(bench, dsn, primary.url, str(cfg))
            with psycopg.connect(dsn) as c:
                published = c.execute("SELECT count(*) FROM m10_recovery.replay_log").fetchone()
            assert published is not None and published[0] == n, published
            rates[label] = n / elapsed
        bench.report(
            f"outbox drain, WAIT 1 (local replica, {n:,} events)",
            rates["WAIT 1"],
            "events/s",
            baseline=rates["no WAIT"],
            baseline_name="no WAIT",
            goal=">= 0.7x",
        )
    finally:
        replica.stop()
        primary.stop()
