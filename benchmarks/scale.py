"""`make bench-scale`: every recurring named query, an outbox claim batch and an idle
maintenance pass on production-shaped data (benchmarks/scale_data.py) at 100k, 2M
and 10M outbox rows (M10_BENCH_SCALE_ROWS, comma-separated), printed as a table with
the ratio.  Goals (issue 12): every query and claim batch within 1.5x from 100k to
10M; a maintenance pass with nothing to do <= 1 s at 10M.

The whole drain pass too (issue 23): a real m10-outbox-processor run (process start
included) publishing ~10,000 ready events beside 500 held-back aggregates, on a
database whose published history is the size's, and the pass after it with nothing
ready.  Trials alternate between the sizes (min of PASS_TRIALS), each after the same
reset (the batch back to pending, VACUUM, CHECKPOINT, Redis emptied).

Each query runs as EXPLAIN (ANALYZE, TIMING OFF) in a transaction that is rolled
back (DML included; a COPY's inner DELETE); the figure is the best of RUNS
planning + execution times (on a shared machine the minimum is the least
disturbed).  Separate from `make bench`: the 10M build takes minutes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg.rows import dict_row

from benchmarks.run import compile_package
from benchmarks.scale_data import RUN_AFTER, Shape, fill, recurring_params
from devenv.services import stack
from m10jobs.edges.migrate import migrate
from m10jobs.edges.queries import query

SIZES = [
    int(x) for x in os.environ.get("M10_BENCH_SCALE_ROWS", "100000,2000000,10000000").split(",")
]
RUNS = 7
PASS_TRIALS = 5
PASS_PENDING = 11_000  # ~10,000 ready, 500 waiting for a retry, ~500 held back behind them
PASS_AGGREGATES = 5_000
IDLE_CONFIG = """
[retention]
[retention.replay_log]
max_age_days = 3650
[retention.outbox_dead_lettered]
max_age_days = 3650
[retention.dead_letter_archive]
max_age_days = 3650
[retention.outbox]
max_age_days = 3650
[retention.retention_jobs]
max_age_days = 3650
"""


def _time_query(
    conn: psycopg.Connection[dict[str, Any]],
    sql: str,
    params: dict[str, Any],
    after: str | None = None,
) -> float:
    """Planning + execution ms of one EXPLAIN ANALYZE after the named query `after` (as the
    job runs it), rolled back."""
    inner = re.fullmatch(r"(?s)COPY \((.*)\) TO STDOUT(?:\s*\([^()]*\))?;?", sql.strip())
    body = (inner.group(1) if inner else sql).strip().rstrip(";")
    with conn.transaction(force_rollback=True):
        if after:
            conn.execute(query(after))
        row = conn.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + body, params).fetchone()
    plan = row["QUERY PLAN"]
    plan = (json.loads(plan) if isinstance(plan, str) else plan)[0]
    return plan["Planning Time"] + plan["Execution Time"]


def _time_queries(
    conn: psycopg.Connection[dict[str, Any]], queries: dict[str, dict[str, Any]]
) -> dict[str, float]:
    """Best of RUNS per query, after a CHECKPOINT (the build's dirty pages are written
    out, not during the timings) and one untimed round; the rounds are interleaved, so
    a burst of noise on a shared machine lands on one round of every query, not on
    every run of one."""
    conn.execute("CHECKPOINT")
    for q, p in queries.items():
        _time_query(conn, query(q), p, RUN_AFTER.get(q))
    best = {q: float("inf") for q in queries}
    for _ in range(RUNS):
        for q, p in queries.items():
            best[q] = min(best[q], _time_query(conn, query(q), p, RUN_AFTER.get(q)))
    return best


def _idle_maintenance(bin_dir: Path, env: dict[str, str], dsn: str) -> float:
    """Wall seconds of an m10-maintenance pass with nothing to do (best of 3)."""
    # Every dead letter decided already: an abandoned one needs an operator, so a pass that
    # still finds one exits 1 by design (it is not a pass with nothing to do).
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            "UPDATE m10_recovery.dead_letter_archive "
            "SET reconcile_outcome = 'already_processed', reconciled_at = now() "
            "WHERE reconcile_outcome IS NULL OR reconcile_outcome = 'abandoned'"
        )
        c.execute("VACUUM ANALYZE m10_recovery.dead_letter_archive")
    cfg = Path(tempfile.mkdtemp()) / "m10jobs.toml"
    cfg.write_text(IDLE_CONFIG)
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        proc = subprocess.run(
            [str(bin_dir / "m10-maintenance"), "--config", str(cfg)],
            env={**env, "M10_DATABASE_URL": dsn},
            capture_output=True,
            text=True,
            timeout=600,
        )
        times.append(time.monotonic() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"m10-maintenance exited {proc.returncode}: {proc.stderr[-2000:]}")
    return min(times)


def _pass_db(admin_dsn: str, dsn_for: Any, n: int) -> str:
    """A database for the drain pass: n outbox rows of history, PASS_PENDING pending."""
    name = f"pass{n}"
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    dsn = dsn_for(name)
    shape = replace(
        Shape.of(n),
        pending=PASS_PENDING,
        aggregates=PASS_AGGREGATES,
        dead_letters=0,
        cost_records=0,
    )
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        migrate(c)
        fill(c, shape)
    return dsn


def _reset_pass(dsn: str, n: int, redis_url: str) -> None:
    """The pass's events pending again, as built (the waiting ones were never touched)."""
    first = n - PASS_PENDING
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            "UPDATE m10_recovery.outbox SET status = 'pending', attempts = 0, published_at = NULL,"
            " stream = NULL, stream_entry_id = NULL WHERE id > %s AND status = 'published'",
            (first,),
        )
        c.execute("DELETE FROM m10_recovery.replay_log WHERE event_id > %s", (first,))
        c.execute("VACUUM ANALYZE m10_recovery.outbox, m10_recovery.replay_log")
        c.execute("CHECKPOINT")
    redis.Redis.from_url(redis_url).flushdb()


def _processor_pass(bin_dir: Path, env: dict[str, str], dsn: str) -> tuple[float, int]:
    """Wall seconds of one m10-outbox-processor pass; events it published."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(bin_dir / "m10-outbox-processor")],
        env={**env, "M10_DATABASE_URL": dsn},
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"m10-outbox-processor exited {proc.returncode}: {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])["tasks"][0]["summary"]
    return elapsed, summary["published"]


def _drain_passes(
    bin_dir: Path, env: dict[str, str], dsns: dict[int, str], redis_url: str
) -> dict[int, dict[str, float]]:
    """Best of PASS_TRIALS ms of a drain pass and of the idle pass after it, per size;
    the trials alternate between the sizes."""
    drain = "PASS m10-outbox-processor, ~10k ready"
    idle = "PASS m10-outbox-processor, nothing ready"
    best = {n: {drain: float("inf"), idle: float("inf")} for n in dsns}
    for _ in range(PASS_TRIALS):
        for n, dsn in dsns.items():
            _reset_pass(dsn, n, redis_url)
            t, published = _processor_pass(bin_dir, env, dsn)
            if published < PASS_PENDING - 2 * PASS_AGGREGATES // 10 - 200:
                raise SystemExit(f"drain pass at {n:,} published only {published}")
            best[n][drain] = min(best[n][drain], t * 1000)
            t, _ = _processor_pass(bin_dir, env, dsn)
            best[n][idle] = min(best[n][idle], t * 1000)
    return best


def main() -> int:
    compile_package()
    bin_dir = Path(sys.executable).parent
    results: dict[int, dict[str, float]] = {}
    with stack() as st:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("M10_")},
            **st.env(),
            "M10_METRICS_DIR": "",
        }
        for n in SIZES:
            name = f"scale{n}"
            with psycopg.connect(st.postgres.dsn, autocommit=True) as c:
                c.execute(f"CREATE DATABASE {name}")
            dsn = st.postgres.dsn_for(name)
            t0 = time.monotonic()
            with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
                migrate(c)
                fill(c, Shape.of(n))
                print(f"built {n:,} rows in {time.monotonic() - t0:.0f} s", flush=True)
                c.execute("SET jit = off")  # as m10jobs.edges.db connects
                c.execute("SELECT m10_recovery.acquire_lock('m10:outbox_processor', 'h:1:r', 3600)")
                times = _time_queries(c, dict(sorted(recurring_params(Shape.of(n)).items())))
                c.execute("SELECT m10_recovery.release_lock('m10:outbox_processor', 'h:1:r')")
            times["PASS m10-maintenance, nothing to do"] = (
                _idle_maintenance(bin_dir, env, dsn) * 1000
            )
            results[n] = times
            with psycopg.connect(st.postgres.dsn, autocommit=True) as c:
                c.execute(f"DROP DATABASE {name}")
        t0 = time.monotonic()
        pass_dsns = {n: _pass_db(st.postgres.dsn, st.postgres.dsn_for, n) for n in SIZES}
        print(f"built the drain-pass databases in {time.monotonic() - t0:.0f} s", flush=True)
        for n, times in _drain_passes(bin_dir, env, pass_dsns, st.redis.url).items():
            results[n].update(times)
        with psycopg.connect(st.postgres.dsn, autocommit=True) as c:
            for n in SIZES:
                c.execute(f"DROP DATABASE pass{n}")
    small, big = SIZES[0], SIZES[-1]
    heads = "".join(f" {n:>12,}" for n in SIZES)
    print(f"\n{'query / pass':48}{heads}  ratio   (ms; best of {RUNS}, passes of {PASS_TRIALS})")
    worst = 0.0
    for q in results[small]:
        a, b = results[small][q], results[big][q]
        ratio = b / a if a > 0 else float("inf")
        worst = max(worst, ratio if not q.startswith("PASS") else 0)
        flag = "  <-- over 1.5x" if ratio > 1.5 and not q.startswith("PASS") else ""
        cells = "".join(f" {results[n][q]:12.2f}" for n in SIZES)
        print(f"{q:48}{cells} {ratio:6.2f}x{flag}")
    idle = results[big]["PASS m10-maintenance, nothing to do"] / 1000
    print(
        f"\nworst query ratio {worst:.2f}x (goal <= 1.5x); idle maintenance pass at {big:,}: "
        f"{idle:.2f} s (goal <= 1 s); load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
