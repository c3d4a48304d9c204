"""Lease acquire+release pairs/s on one connection vs the advisory-lock floor."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    from benchmarks.run import Bench

SECONDS = 3.0


def _rate(conn: psycopg.Connection, acquire: str, release: str, args: tuple) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < SECONDS:
        token = conn.execute(acquire, args).fetchone()[0]
        conn.execute(release, (*args[:2], token) if "release_lock" in release else args)
        n += 1
    return n / (time.perf_counter() - t0)


def run(bench: Bench) -> None:
    dsn = bench.fresh_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        for _ in range(200):  # warm up plans and caches
            conn.execute("SELECT pg_try_advisory_lock(42)")
            conn.execute("SELECT pg_advisory_unlock(42)")
        advisory = _rate(
            conn, "SELECT pg_try_advisory_lock(%s)", "SELECT pg_advisory_unlock(%s)", (42,)
        )
        lease = _rate(
            conn,
            "SELECT m10_recovery.acquire_lock(%s, %s, 60)",
            "SELECT m10_recovery.release_lock(%s, %s, %s)",
            ("bench", "h:1:r"),
        )
    bench.report("advisory lock+unlock pairs/s (baseline)", advisory, "pairs/s")
    bench.report(
        "lease acquire+release pairs/s",
        lease,
        "pairs/s",
        baseline=advisory,
        baseline_name="advisory",
        goal=">= 0.5x advisory",
    )
