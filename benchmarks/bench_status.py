"""`m10 status` on production-size tables: wall time of the whole command (goal <= 1 s)
and the plan of every status_* named query (no sequential scan of a big table).

Data: BENCH_STATUS_EVENTS published outbox events with their replay_log rows
(default 1,000,000), 1% of that pending (a tenth of those retrying), 100,000
reconciled dead letters plus abandoned and unreconciled ones, five years of
hourly cost periods with a hole.  Baseline from the same run: `m10 locks list`
(process start, connect, one query).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from typing import Any

import psycopg

from m10jobs.edges.queries import _all as named_queries

BIG_TABLES = ("outbox", "replay_log", "dead_letter_archive", "snapshot_periods")


def _fill(dsn: str, events: int) -> None:
    pending = max(events // 100, 10)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            """INSERT INTO m10_recovery.outbox
                     (event_type, payload, status, created_at, published_at, attempts)
                     SELECT 'bench', '{}', 'published', now() - make_interval(secs => g),
                            now() - make_interval(secs => g) + interval '1 second', 1
                       FROM generate_series(1, %(n)s) g""",
            {"n": events},
        )
        c.execute("""INSERT INTO m10_recovery.replay_log
                     (event_id, event_type, stream, stream_entry_id, fencing_token, holder_id,
                      enqueued_at, published_at)
                     SELECT id, event_type, 'm10:outbox', id || '-0', 1, 'h', created_at,
                            published_at
                       FROM m10_recovery.outbox""")
        c.execute(
            """INSERT INTO m10_recovery.outbox
                     (event_type, payload, aggregate_type, aggregate_id, attempts,
                      next_attempt_at, created_at)
                     SELECT 'bench', '{}', 'order', (g %% 500)::text,
                            CASE WHEN g %% 10 = 0 THEN 3 ELSE 0 END,
                            now() + CASE WHEN g %% 10 = 0 THEN interval '5 minutes'
                                         ELSE interval '0' END,
                            now() - make_interval(secs => g)
                       FROM generate_series(1, %(n)s) g""",
            {"n": pending},
        )
        c.execute("""INSERT INTO m10_recovery.dead_letter_archive
                     (dl_stream, dl_entry_id, reason, reconcile_outcome, reconciled_at,
                      archived_at)
                     SELECT 'm10:dead_letter', g || '-0', 'bench',
                            CASE WHEN g <= 50 THEN 'abandoned'
                                 WHEN g <= 150 THEN NULL
                                 WHEN g % 2 = 0 THEN 'replayed'
                                 ELSE 'already_processed' END,
                            CASE WHEN g > 50 AND g <= 150 THEN NULL
                                 ELSE now() - make_interval(mins => g) END,
                            now() - make_interval(mins => g)
                       FROM generate_series(1, 100000) g""")
        c.execute("""INSERT INTO aos_cost.snapshot_periods
                     (granularity, period_start, rows_written, amount_usd, record_count)
                     SELECT 'hour', h, 0, 0, 0
                       FROM generate_series(date_trunc('hour', now(), 'UTC')
                                                - interval '5 years',
                                            date_trunc('hour', now(), 'UTC') - interval '1 hour',
                                            interval '1 hour') h
                      WHERE h <> date_trunc('hour', now(), 'UTC') - interval '30 hours'""")
        c.execute("VACUUM ANALYZE")


def _plans(dsn: str) -> dict[str, tuple[list[str], float]]:
    """Per status_* query: big tables it scans sequentially (EXPLAIN) and its median
    execution time in ms (5 runs, in one session: the database's share of `m10 status`)."""
    found = {}
    params = {"window_hours": 168, "grace_s": 900}
    with psycopg.connect(dsn, autocommit=True) as c:
        for name, sql in named_queries().items():
            if name.startswith("status_") and name != "status_session":  # a SET, not a read
                plan = "\n".join(r[0] for r in c.execute("EXPLAIN " + sql, params).fetchall())
                times = []
                for _ in range(5):
                    t0 = time.monotonic()
                    c.execute(sql, params).fetchall()
                    times.append((time.monotonic() - t0) * 1000)
                found[name] = (
                    [t for t in BIG_TABLES if re.search(rf"Seq Scan on {t}\b", plan)],
                    statistics.median(times),
                )
    return found


def _wall(bench: Any, env: dict[str, str], *args: str, runs: int = 5) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(runs):
        t0 = time.monotonic()
        proc = subprocess.run(
            [str(bench.bin / "m10"), *args], env=env, capture_output=True, text=True
        )
        times.append(time.monotonic() - t0)
        out = proc.stdout
    return statistics.median(times), out


def run(bench: Any) -> None:
    events = int(os.environ.get("BENCH_STATUS_EVENTS", "1000000"))
    dsn = bench.fresh_db()
    t0 = time.monotonic()
    _fill(dsn, events)
    bench.report(
        f"fill ({events:,} events + replay_log + dead letters)", time.monotonic() - t0, "s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("M10_", "AWS_"))}
        env |= {
            "M10_DATABASE_URL": dsn,
            "M10_STATE_DIR": f"{tmp}/state",
            "M10_LOG_DIR": f"{tmp}/log",
            "M10_METRICS_DIR": f"{tmp}/metrics",
        }
        bare, _ = _wall(bench, env, "--version")
        baseline, _ = _wall(bench, env, "locks", "list")
        wall, out = _wall(bench, env, "status", "--json")
    doc = json.loads(out)
    assert doc["pipeline"]["outbox"]["pending"] >= events // 100, doc["pipeline"]
    assert doc["artifacts"]["cost"]["hours_missing"] == 1, doc["artifacts"]["cost"]
    bench.report(
        "m10 status --json (median of 5, wall)",
        wall * 1000,
        "ms",
        baseline=baseline * 1000,
        baseline_name="m10 locks list",
        goal="<= 1000 ms",
    )
    bench.report("m10 --version (process start only)", bare * 1000, "ms")
    plans = _plans(dsn)
    for name, (tables, ms) in sorted(plans.items()):
        bench.report(
            f"{name} ({'SEQ SCAN on ' + ', '.join(tables) if tables else 'no seq scan'})", ms, "ms"
        )
    bench.report("all status queries (database time)", sum(ms for _, ms in plans.values()), "ms")
