"""Outbox drain: N events (default 100,000; env M10_BENCH_OUTBOX_EVENTS) end to end
through m10-outbox-processor, against the raw floor for the same work measured in
the same run (on its own copy of the data): read the rows, pipelined XADD, COPY of
the ids into a logged table with a primary key, one UPDATE of every row
(synchronous_commit on).  Then the same burst drained from a table that was never
analyzed (autovacuum off for it: as right after a sudden backlog), against the analyzed
rate of the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from typing import TYPE_CHECKING

import psycopg
import redis

from m10jobs.edges.outbox_stream import OUTBOX_FIELDS as FIELDS

if TYPE_CHECKING:
    from benchmarks.run import Bench

EVENTS = int(os.environ.get("M10_BENCH_OUTBOX_EVENTS", "100000"))


def _fill(dsn: str, n: int, *, analyze: bool = True) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        if not analyze:
            c.execute("ALTER TABLE m10_recovery.outbox SET (autovacuum_enabled = false)")
        c.execute(
            "INSERT INTO m10_recovery.outbox (event_type, aggregate_type, aggregate_id, payload,"
            " idempotency_key) SELECT 'bench.event', 'order', (g %% 1000)::text, "
            "jsonb_build_object('n', g, 'customer', 'c' || (g %% 977), 'amount', g * 1.5, "
            "'note', repeat('x', 120)), 'bench:' || g FROM generate_series(1, %s) g",
            (n,),
        )
        if analyze:
            c.execute("VACUUM ANALYZE m10_recovery.outbox")


def _floor(dsn: str, redis_url: str, n: int) -> float:
    """Seconds for the bare minimum: read the rows, pipelined XADD, COPY of the ids."""
    client = redis.Redis.from_url(redis_url)
    t0 = time.perf_counter()
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "SELECT id, idempotency_key, event_type, aggregate_type, aggregate_id, "
            "payload::text, created_at::text FROM m10_recovery.outbox "
            "WHERE status = 'pending' ORDER BY id"
        ).fetchall()
        pipe = client.pipeline(transaction=False)
        for i, r in enumerate(rows, 1):
            pipe.xadd(
                "bench:floor",
                dict(zip(FIELDS, (str(v) if v is not None else "" for v in r), strict=True)),
            )
            if i % 1000 == 0:
                pipe.execute()
        pipe.execute()
        c.execute("CREATE TABLE bench_done (id bigint PRIMARY KEY)")
        with c.cursor().copy("COPY bench_done (id) FROM STDIN") as copy:
            for r in rows:
                copy.write_row((r[0],))
        c.execute(
            "UPDATE m10_recovery.outbox o SET status = 'published', published_at = now() "
            "FROM bench_done d WHERE o.id = d.id"
        )
        c.commit()
    elapsed = time.perf_counter() - t0
    assert len(rows) == n and client.xlen("bench:floor") == n
    client.delete("bench:floor")
    return elapsed


def _hwm_kib(pid: int) -> int:
    """Peak RSS so far of a running process (VmHWM; 0 once it is gone).  Polled rather
    than taken from wait4: a child's ru_maxrss includes the forking parent's."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _drain(
    bench: Bench, dsn: str, redis_url: str, config: str | None = None
) -> tuple[float, int, int]:
    """Seconds to drain with the real processor (passes until the backlog is 0), passes,
    peak RSS in KiB of the processor processes."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("M10_")},
        **bench.stack.env(),
        "M10_DATABASE_URL": dsn,
        "M10_REDIS_URL": redis_url,
        "M10_METRICS_DIR": "",
        **({"M10_CONFIG": config} if config else {}),
    }
    t0 = time.perf_counter()
    passes, peak_kib = 0, 0
    while True:
        passes += 1
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(
                [str(bench.bin / "m10-outbox-processor")],
                env=env,
                stdout=out,
                stderr=err,
                text=True,
            )
            while proc.poll() is None:
                peak_kib = max(peak_kib, _hwm_kib(proc.pid))
                time.sleep(0.05)
            out.seek(0)
            err.seek(0)
            if proc.returncode != 0:
                raise SystemExit(
                    f"bench_outbox: processor exited {proc.returncode}: {err.read()[-2000:]}"
                )
            stdout = out.read()
        summary = json.loads(stdout.strip().splitlines()[-1])["tasks"][0]["summary"]
        if summary["backlog"] == 0 or passes > 50:
            break
    return time.perf_counter() - t0, passes, peak_kib


def run(bench: Bench) -> None:
    n = EVENTS
    redis_url = bench.stack.redis.url
    floor_dsn, dsn = bench.fresh_db(), bench.fresh_db()
    _fill(floor_dsn, n)
    floor_s = _floor(floor_dsn, redis_url, n)
    _fill(dsn, n)
    redis.Redis.from_url(redis_url).flushdb()
    elapsed, passes, rss_kib = _drain(bench, dsn, redis_url)
    with psycopg.connect(dsn) as c:
        published = c.execute("SELECT count(*) FROM m10_recovery.replay_log").fetchone()[0]
    in_stream = redis.Redis.from_url(redis_url).xlen("m10:outbox")
    assert published == n and in_stream == n, (published, in_stream)
    print(
        f"  {n:,} events drained in {elapsed:.2f}s over {passes} pass(es) "
        f"(includes process start); floor {floor_s:.2f}s"
    )
    bench.report(
        "outbox drain, end to end",
        n / elapsed,
        "events/s",
        baseline=n / floor_s,
        baseline_name="raw floor",
        goal=">= 15,000 events/s and >= 0.70x floor",
    )
    bench.report("processor peak RSS", rss_kib / 1024, "MiB")
    cold = bench.fresh_db()
    _fill(cold, n, analyze=False)
    redis.Redis.from_url(redis_url).flushdb()
    cold_s, cold_passes, _ = _drain(bench, cold, redis_url)
    print(f"  {n:,} events drained in {cold_s:.2f}s over {cold_passes} pass(es), never analyzed")
    bench.report(
        "outbox drain, table never analyzed",
        n / cold_s,
        "events/s",
        baseline=n / elapsed,
        baseline_name="analyzed",
        goal=">= 0.8x analyzed",
    )
