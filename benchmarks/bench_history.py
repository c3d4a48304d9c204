"""What recording a run in the run history (m10_recovery.job_runs) costs a pass: whole
m10-maintenance runs (seven tasks, each under its own lease, one connection) through the
real runner, in this process, alternately with and without the history INSERT (the
runner's RECORD_HISTORY switch), so both see the same database and caches.  The figure:
the median run with the write against the median without it (goal: within noise, one
statement of a few hundred microseconds on a pass of tens of milliseconds)."""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import tempfile
import time

from benchmarks.run import Bench

RUNS = int(os.environ.get("BENCH_HISTORY_RUNS", "40"))


def run(bench: Bench) -> None:
    from m10jobs import runner
    from m10jobs.registry import by_script

    dsn = bench.fresh_db()
    job = by_script("m10-maintenance")
    tmp = tempfile.mkdtemp(prefix="bench-history-")
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith("M10_")]:
        del os.environ[key]
    os.environ.update(
        {
            "M10_DATABASE_URL": dsn,
            "M10_REDIS_URL": bench.stack.redis.url,
            "M10_STATE_DIR": f"{tmp}/state",
            "M10_LOG_DIR": f"{tmp}/log",
            "M10_METRICS_DIR": f"{tmp}/metrics",
            "M10_LOG_FORMAT": "json",
        }
    )
    times: dict[bool, list[float]] = {True: [], False: []}
    try:
        for i in range(RUNS * 2 + 4):
            record = i % 2 == 0
            runner.RECORD_HISTORY = record
            t0 = time.perf_counter()
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                code = runner.run(job)
            took = time.perf_counter() - t0
            assert code == 0, f"m10-maintenance exited {code}"
            if i >= 4:  # the first runs warm plans and caches
                times[record].append(took * 1000)
    finally:
        runner.RECORD_HISTORY = True
        os.environ.clear()
        os.environ.update(saved)
    without, with_ = statistics.median(times[False]), statistics.median(times[True])
    bench.report("m10-maintenance pass, no history write (median)", without, "ms")
    bench.report(
        "m10-maintenance pass, with history write (median)",
        with_,
        "ms",
        baseline=without,
        baseline_name="without",
        goal="within noise (+1 INSERT)",
    )
    bench.report("difference (median with - median without)", with_ - without, "ms")
