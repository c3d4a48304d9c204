"""m10-daily-stats for a day with 1M outbox events: wall time and peak RSS of the
job process (goal <= 10 s, <= 100 MB: aggregated in SQL, no row reaches Python).

Baselines from the same run: the job on an empty day (process start, lease,
files) and a bare `count(*)` scan of the busy day's rows.  Scale with
BENCH_DAILY_STATS_EVENTS (default 1,000,000).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

DAY = "2026-01-15"
EMPTY_DAY = "2026-01-10"


def _run_job(bench: Any, dsn: str, log_dir: Path, day: str) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit code) of one m10-daily-stats process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("M10_", "AWS_"))}
    env |= {
        "M10_DATABASE_URL": dsn,
        "M10_LOG_DIR": str(log_dir),
        "M10_STATE_DIR": str(log_dir / "state"),
    }
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [str(bench.bin / "m10-daily-stats"), "--start-date", day, "--until", day],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode


def run(bench: Any) -> None:
    events = int(os.environ.get("BENCH_DAILY_STATS_EVENTS", "1000000"))
    dsn = bench.fresh_db()
    t0 = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as c:
        # the busy day, plus 10% of that on each neighbouring day (must not be counted)
        for day, n in ((DAY, events), ("2026-01-14", events // 10), ("2026-01-16", events // 10)):
            c.execute(
                """INSERT INTO m10_recovery.outbox
                         (event_type, payload, status, created_at, published_at)
                         SELECT CASE WHEN g %% 100 = 0 THEN 'm10.synthetic' ELSE 'bench' END,
                                '{}', 'published', ts,
                                ts + make_interval(secs => (g %% 1000) * 0.001)
                           FROM generate_series(1, %(n)s) g,
                                LATERAL (SELECT %(day)s::date::timestamptz
                                         + make_interval(secs => g * 86399.0 / %(n)s)
                                         AS ts) t""",
                {"n": n, "day": day},
            )
        c.execute("VACUUM ANALYZE m10_recovery.outbox")
        t1 = time.monotonic()
        scanned = c.execute(
            "SELECT count(*) FROM m10_recovery.outbox WHERE created_at >= "
            "%(d)s::date AND created_at < %(d)s::date + 1",
            {"d": DAY},
        ).fetchone()[0]
        scan_s = time.monotonic() - t1
    print(
        f"  seeded {events:,} events for {DAY} (+{2 * (events // 10):,} on the days "
        f"around it) in {time.monotonic() - t0:.1f}s; count(*) saw {scanned:,}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-stats-") as tmp:
        empty_wall, empty_rss, code0 = _run_job(bench, dsn, Path(tmp) / "empty", EMPTY_DAY)
        wall, rss, code = _run_job(bench, dsn, Path(tmp) / "busy", DAY)
        row = (Path(tmp) / "busy" / "m10_stats_2026-01.csv").read_text().splitlines()[-1]
    if code or code0:
        raise SystemExit(f"bench_daily_stats: m10-daily-stats exited {code0}/{code}")
    print(f"  row: {row}", flush=True)
    bench.report(
        "daily stats, 1 busy day: wall time",
        wall,
        "s",
        baseline=empty_wall,
        baseline_name="job on an empty day",
        goal="<= 10 s",
    )
    bench.report(
        "daily stats, 1 busy day: wall time vs bare scan",
        wall,
        "s",
        baseline=scan_s,
        baseline_name="count(*) of the day",
    )
    bench.report(
        "daily stats, 1 busy day: peak RSS of the job",
        rss,
        "MiB",
        baseline=empty_rss,
        baseline_name="job on an empty day",
        goal="<= 100 MB",
    )
