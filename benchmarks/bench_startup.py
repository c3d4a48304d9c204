"""Whole-process wall time: `--help` and a lock-busy pass vs `python -c pass`."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    from benchmarks.run import Bench

RUNS = 15


def _median_ms(argv: list[str], env: dict[str, str], expect: int) -> float:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        code = subprocess.run(argv, env=env, capture_output=True).returncode
        times.append((time.perf_counter() - t0) * 1000)
        assert code == expect, (argv, code)
    return statistics.median(times)


def run(bench: Bench) -> None:
    dsn = bench.fresh_db()
    env = {**os.environ, "M10_DATABASE_URL": dsn}
    import socket

    from m10jobs.registry import by_script, lease_name

    # every maintenance lease (host-local ones under this host's name), held elsewhere
    leases = {
        lease_name(t.lock, t.scope, socket.gethostname())
        for t in by_script("m10-maintenance").tasks
        if "{key}" not in t.lock
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        for lease in leases:
            conn.execute("SELECT m10_recovery.acquire_lock(%s, 'elsewhere:1:b', 3600)", (lease,))
    floor = _median_ms([sys.executable, "-c", "pass"], env, 0)
    script = str(bench.bin / "m10-maintenance")
    helpms = _median_ms([script, "--help"], env, 0)
    busy = _median_ms([script], env, 75)
    bench.report("python -c pass (baseline), median", floor, "ms")
    bench.report(
        "m10-maintenance --help, median",
        helpms,
        "ms",
        baseline=floor,
        baseline_name="python",
        goal="<= 120 ms",
    )
    bench.report(
        "m10-maintenance lock-busy pass (exit 75), median",
        busy,
        "ms",
        baseline=floor,
        baseline_name="python",
        goal="<= 250 ms",
    )
