"""Whole-process wall time: `--help` and a lock-busy pass vs `python -c pass`, and what
the lease probe (edges/leaseprobe.py) saves.

The lock-busy state is one that happens: m10-outbox-processor's one cluster-wide lease
held by another host's chain (the commonest start on a second host), answered by the
probe, and the same start with the probe disabled (the driver's way: import psycopg,
connect, acquire_lock NULL); and one probe alone, the connection a run with a host-local
lease would pay for nothing (the runner asks the probe only when every lease of the run
is cluster-wide).  The machine may be shared and noisy: the variants run
interleaved and each figure is the minimum of RUNS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:
    from benchmarks.run import Bench

RUNS = 21
SCRIPT = "m10-outbox-processor"
LEASE = "m10:outbox_processor"
_START = "from m10jobs.cli.entry import m10_outbox_processor as c\nc([])\n"
NO_PROBE = "import m10jobs.edges.leaseprobe as p\np.live_holders = lambda *a, **k: None\n" + _START


def _interleaved_min_ms(
    variants: dict[str, tuple[list[str], int]], env: dict[str, str]
) -> dict[str, float]:
    """Each variant's fastest wall time of RUNS, the variants taking turns."""
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(RUNS):
        for name, (argv, expect) in variants.items():
            t0 = time.perf_counter()
            code = subprocess.run(argv, env=env, capture_output=True).returncode
            best[name] = min(best[name], (time.perf_counter() - t0) * 1000)
            assert code == expect, (argv, code)
    return best


def run(bench: Bench) -> None:
    dsn = bench.fresh_db()
    env = {**os.environ, "M10_DATABASE_URL": dsn}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT m10_recovery.acquire_lock(%s, 'elsewhere:1:b', 3600)", (LEASE,))
    script = str(bench.bin / SCRIPT)
    py = sys.executable
    t = _interleaved_min_ms(
        {
            "floor": ([py, "-c", "pass"], 0),
            "help": ([script, "--help"], 0),
            "busy": ([script], 75),
            "probe": ([py, "-c", _START], 75),
            "driver": ([py, "-c", NO_PROBE], 75),
        },
        env,
    )
    bench.report("python -c pass (baseline), min", t["floor"], "ms")
    bench.report(
        f"{SCRIPT} --help, min",
        t["help"],
        "ms",
        baseline=t["floor"],
        baseline_name="python",
        goal="<= 120 ms",
    )
    bench.report(
        f"{SCRIPT} lock-busy pass (exit 75, lease held by another host), min",
        t["busy"],
        "ms",
        baseline=t["floor"],
        baseline_name="python",
        goal="<= 250 ms",
    )
    from m10jobs.edges.leaseprobe import live_holders

    probe_ms = float("inf")
    for _ in range(RUNS):
        t0 = time.perf_counter()
        assert live_holders(dsn, [LEASE], app="bench") is not None
        probe_ms = min(probe_ms, (time.perf_counter() - t0) * 1000)
    bench.report(
        "  one probe in-process (what a run with a host-local lease no longer pays), min",
        probe_ms,
        "ms",
    )
    bench.report(
        "  the same start without the lease probe (driver: psycopg + acquire_lock), min",
        t["driver"],
        "ms",
        baseline=t["probe"],
        baseline_name="with the probe",
    )
