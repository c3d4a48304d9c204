"""Cost snapshots: a full hourly backfill (one transaction per hour) and the daily build,
against the floor of running the bare source query for the same periods.

Scaled for a shared 2-core machine: 168 hours x 20 tenant/categories x 6 records
(20,160 records).  The job figures include process start-up and the lease.
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import psycopg

from m10jobs.edges.queries import query

if TYPE_CHECKING:
    from benchmarks.run import Bench

HOURS, KEYS, PER_HOUR = 168, 20, 6
END = datetime(2026, 1, 10, tzinfo=UTC)


def _job(bench: Bench, dsn: str, script: str) -> float:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("M10_")},
        "M10_DATABASE_URL": dsn,
    }
    t0 = time.perf_counter()
    subprocess.run(
        [str(bench.bin / script), "--until", END.isoformat()],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return time.perf_counter() - t0


def run(bench: Bench) -> None:
    dsn = bench.fresh_db()
    start = END - HOURS * timedelta(hours=1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO aos_cost.cost_records (occurred_at, tenant_id, category, amount_usd)
            SELECT %s + h * interval '1 hour' + r * interval '7 minutes',
                   't' || (k %% 5), 'c' || (k / 5), round((k + r + h %% 13) * 0.0371, 4)
              FROM generate_series(0, %s - 1) h, generate_series(0, %s - 1) k,
                   generate_series(0, %s - 1) r""",
            (start, HOURS, KEYS, PER_HOUR),
        )
        conn.execute("ANALYZE aos_cost.cost_records")
        source = query("cost_source_default")
        t0 = time.perf_counter()
        for i in range(HOURS):
            p = start + i * timedelta(hours=1)
            conn.execute(
                source, {"period_start": p, "period_end": p + timedelta(hours=1)}
            ).fetchall()
        floor = time.perf_counter() - t0
    hourly = _job(bench, dsn, "aos-cost-snapshot-hourly")
    rerun = _job(bench, dsn, "aos-cost-snapshot-hourly")
    daily = _job(bench, dsn, "aos-cost-snapshot-daily")
    bench.report("bare source query, 168 hours (baseline)", HOURS / floor, "hours/s")
    bench.report(
        "hourly backfill, 168 hours (incl. start-up)",
        HOURS / hourly,
        "hours/s",
        baseline=HOURS / floor,
        baseline_name="bare query",
    )
    bench.report("hourly rerun: 3-hour re-snapshot window", rerun * 1000, "ms")
    bench.report("daily build, 7 days with baselines", daily * 1000, "ms")
