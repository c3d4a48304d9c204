"""Retention of 1M replay_log rows: batched archive + delete (the retention_cleanup task,
run as operators run it) against the same work done by PostgreSQL and psql alone, in the
same run: one `COPY (DELETE ... RETURNING *) TO STDOUT (FORMAT binary)` piped through
`zstd -1` into a file (the same rows, the same archive format, one transaction).  One plain
DELETE of the same rows, which archives nothing, stays as a second reference.

Goals: >= 0.8x the psql+zstd floor's rows/s, longest transaction < 1 s.
Rows: M10_BENCH_RETENTION_ROWS (default 1,000,000).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from devenv.services import pg_bindir

if TYPE_CHECKING:
    from benchmarks.run import Bench

ROWS = int(os.environ.get("M10_BENCH_RETENTION_ROWS", "1000000"))
BATCH = 10000
# retention.workers (default: the setting's); M10_BENCH_RETENTION_WORKERS to compare
WORKERS = os.environ.get("M10_BENCH_RETENTION_WORKERS")
FILL = """
INSERT INTO m10_recovery.replay_log (event_id, idempotency_key, event_type, stream,
       stream_entry_id, fencing_token, holder_id, enqueued_at, published_at)
SELECT g, 'key-' || g, 'order.created', 'm10:outbox', g || '-0', 42, 'bench-host:1:run',
       now() - interval '41 days', now() - interval '40 days'
  FROM generate_series(1, %s::int) g
"""
CONFIG = f"""
[retention]
batch_size = {BATCH}
{f"workers = {WORKERS}" if WORKERS else ""}
[retention.dead_letter_archive]
enabled = false
[retention.outbox]
enabled = false
[retention.retention_jobs]
enabled = false
[retention.fallback_uploads]
enabled = false
[retention.stats_csv]
enabled = false
[retention.canary_reports]
enabled = false
"""


def _filled(bench: Bench) -> str:
    dsn = bench.fresh_db()
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(FILL, (ROWS,))
        c.execute("VACUUM ANALYZE m10_recovery.replay_log")
    return dsn


def _checkpoint(dsn: str) -> None:
    """Each timed run starts from a clean checkpoint, not in the one the fills' WAL (3M rows)
    triggers: that one lands on whichever run comes next."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CHECKPOINT")


def _cutoff() -> datetime:
    """The cutoff as a parameter, as retention passes it: `now() - interval` in the WHERE
    clause is evaluated per row: the single DELETE ran 25-35% slower with it, which
    flattered every ratio against it."""
    return datetime.now(UTC) - timedelta(days=30)


def _batched_delete_only(dsn: str) -> float:
    """The same keyset batches without archiving: where the time goes."""
    _checkpoint(dsn)
    with psycopg.connect(dsn, autocommit=True) as c:
        t0 = time.monotonic()
        for lo in range(0, ROWS, BATCH):
            c.execute(
                "DELETE FROM m10_recovery.replay_log WHERE id > %s AND id <= %s AND "
                "published_at < %s",
                (lo, lo + BATCH, _cutoff()),
            )
        return time.monotonic() - t0


def _psql_archive_delete(dsn: str, out: Path) -> float:
    """The floor: PostgreSQL deletes and streams the rows, psql writes them out, zstd -1
    compresses them; no batching, no checks, one transaction."""
    _checkpoint(dsn)
    copy = (
        "COPY (DELETE FROM m10_recovery.replay_log WHERE published_at < "
        f"'{_cutoff().isoformat()}'::timestamptz RETURNING *) TO STDOUT (FORMAT binary)"
    )
    with out.open("wb") as sink:
        t0 = time.monotonic()
        psql = subprocess.Popen(
            [str(pg_bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", copy],
            stdout=subprocess.PIPE,
        )
        zstd = subprocess.Popen(["zstd", "-1", "-q", "-c"], stdin=psql.stdout, stdout=sink)
        assert psql.stdout is not None
        psql.stdout.close()  # zstd owns the pipe now
        codes = (psql.wait(timeout=1800), zstd.wait(timeout=1800))
        took = time.monotonic() - t0
    if codes != (0, 0):
        raise SystemExit(f"psql | zstd exited {codes}")
    with psycopg.connect(dsn, autocommit=True) as c:
        left = c.execute("SELECT count(*) FROM m10_recovery.replay_log").fetchone()[0]
    assert left == 0, f"{left} rows left by the floor"
    return took


def run(bench: Bench) -> None:
    base_dsn, ours_dsn, plain_dsn, floor_dsn = (_filled(bench) for _ in range(4))

    with tempfile.TemporaryDirectory() as tmp:
        floor_file = Path(tmp) / "replay_log.pgcopy.zst"
        floor = _psql_archive_delete(floor_dsn, floor_file)
        floor_size = floor_file.stat().st_size

    _checkpoint(base_dsn)
    with psycopg.connect(base_dsn, autocommit=True) as c:
        t0 = time.monotonic()
        c.execute("DELETE FROM m10_recovery.replay_log WHERE published_at < %s", (_cutoff(),))
        single = time.monotonic() - t0

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "m10jobs.toml"
        cfg.write_text(CONFIG)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("M10_")},
            "M10_DATABASE_URL": ours_dsn,
            "M10_STATE_DIR": str(Path(tmp) / "state"),
        }
        _checkpoint(ours_dsn)
        t0 = time.monotonic()
        proc = subprocess.run(
            [str(bench.bin / "m10"), "run", "retention_cleanup", "--config", str(cfg)],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        ours = time.monotonic() - t0
        if proc.returncode != 0:
            raise SystemExit(f"retention_cleanup exited {proc.returncode}: {proc.stderr[-2000:]}")
        task = json.loads(proc.stdout.strip().splitlines()[-1])["tasks"][0]
        summary, task_s = task["summary"], task["duration_s"]
        archived = summary["policies"]["replay_log"]["archived"]
        size = sum(p.stat().st_size for p in (Path(tmp) / "state").rglob("*.pgcopy.zst"))
    assert archived == ROWS, f"archived {archived} of {ROWS}"
    with psycopg.connect(ours_dsn, autocommit=True) as c:
        left = c.execute("SELECT count(*) FROM m10_recovery.replay_log").fetchone()[0]
    assert left == 0, f"{left} rows left"

    bench.report(
        f"archive+delete {ROWS:,} rows (batches of {BATCH:,})",
        ROWS / ours,
        "rows/s",
        baseline=ROWS / floor,
        baseline_name="psql COPY (DELETE..RETURNING) | zstd -1",
        goal=">= 0.80x",
    )
    bench.report(
        "  the same, against a bare DELETE (no archive)",
        ROWS / ours,
        "rows/s",
        baseline=ROWS / single,
        baseline_name="single DELETE",
    )
    # the same run's task alone (lease to release): the start-up is bench_startup's figure
    bench.report(
        "  the retention task alone (no process start-up)",
        ROWS / task_s,
        "rows/s",
        baseline=ROWS / floor,
        baseline_name="psql | zstd -1",
    )
    bench.report(
        "longest single transaction",
        summary["longest_txn_s"] * 1000,
        "ms",
        baseline=single * 1000,
        baseline_name="single DELETE",
        goal="< 1000 ms",
    )
    bench.report(
        "archive size (zstd binary COPY)",
        size / 1e6,
        "MB",
        baseline=floor_size / 1e6,
        baseline_name="psql | zstd -1",
    )
    plain = _batched_delete_only(plain_dsn)
    bench.report(
        "  same batches, DELETE only (no archive)",
        ROWS / plain,
        "rows/s",
        baseline=ROWS / single,
        baseline_name="single DELETE",
    )
