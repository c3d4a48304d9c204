"""m10-daily-stats and m10 postflight against real PostgreSQL, as separate processes."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from m10jobs.edges.files import atomic_write_json
from m10jobs.jobs.stats.statsfile import marker_for, render
from tests.conftest import BIN
from tests.lease_support import expire_leases
from tests.stats_support import seed_day, stats_files, summary


def rows_of(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.fixture
def seeded(conn: Any) -> Any:
    seed_day(conn, date(2026, 10, 29), 3)
    seed_day(conn, date(2026, 10, 30), 5, synthetic=4)
    seed_day(conn, date(2026, 10, 31), 7)
    seed_day(conn, date(2026, 11, 1), 11)
    conn.execute("""INSERT INTO m10_recovery.retention_jobs
                    (run_id, policy, target, cutoff, status, rows_deleted, finished_at)
                    VALUES ('r', 'p', 't', now(), 'succeeded', 42, '2026-10-31 03:00+00')""")
    conn.execute("""INSERT INTO m10_recovery.dead_letter_archive
                    (dl_stream, dl_entry_id, reason, dead_lettered_at, reconcile_outcome,
                     reconciled_at)
                    VALUES ('dl', '1-0', 'x', '2026-10-30 05:00+00', 'replayed',
                            '2026-11-01 01:00+00')""")
    return conn


def test_backfill_across_month_boundary_is_idempotent(
    cli: Any, env: dict[str, str], seeded: Any
) -> None:
    log = Path(env["M10_LOG_DIR"])
    first = cli("m10-daily-stats", "--start-date", "2026-10-29", "--until", "2026-10-29")
    assert first.returncode == 0, first.stderr
    assert [r["date"] for r in rows_of(log / "m10_stats_2026-10.csv")] == ["2026-10-29"]

    # three missed days, two of them in October, one in November
    proc = cli("m10-daily-stats", "--until", "2026-11-01")
    assert proc.returncode == 0, proc.stderr
    assert summary(proc.stdout)["tasks"][0]["summary"]["computed"] == [
        "2026-10-30",
        "2026-10-31",
        "2026-11-01",
    ]
    assert summary(proc.stdout)["tasks"][1]["summary"]["exported"] == [
        "2026-10-30",
        "2026-10-31",
        "2026-11-01",
    ]
    october = rows_of(log / "m10_stats_2026-10.csv")
    november = rows_of(log / "m10_stats_2026-11.csv")
    assert [r["date"] for r in october] == ["2026-10-29", "2026-10-30", "2026-10-31"]
    assert [r["date"] for r in november] == ["2026-11-01"]
    d30, d31 = october[1], october[2]
    assert (d30["outbox_enqueued"], d30["outbox_published"]) == ("9", "8")
    assert (d30["synthetic_sent"], d30["synthetic_arrived"]) == ("4", "3")
    assert d30["dead_lettered"] == "1" and november[0]["dl_reconciled"] == "1"
    assert d31["retention_rows_deleted"] == "42" and d31["locks_reclaimed"] == ""
    assert float(d31["publish_latency_p50_ms"]) == pytest.approx(400.0)  # 100..700 ms
    assert float(november[0]["publish_latency_p95_ms"]) == pytest.approx(1050.0)
    marker = __import__("json").loads((log / "m10_stats_2026-11.csv.processed").read_text())
    assert marker["last_date"] == "2026-11-01" and marker["rows"] == 1

    before = stats_files(log)
    again = cli("m10-daily-stats", "--until", "2026-11-01")
    assert again.returncode == 0, again.stderr
    assert summary(again.stdout)["tasks"][0]["summary"]["computed"] == []
    assert summary(again.stdout)["tasks"][1]["summary"]["exported"] == []
    assert stats_files(log) == before
    # nothing to do still reports the newest day (the M10DailyStatsStale alert's input)
    prom = (Path(env["M10_METRICS_DIR"]) / "m10_daily_stats.prom").read_text()
    assert (
        'm10_daily_stats_last_day_timestamp_seconds{job="m10-daily-stats"} '
        f"{int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())}"
    ) in prom

    ok = cli("m10", "postflight", "--as-of", "2026-11-02")
    assert ok.returncode == 0, ok.stderr
    stale = cli("m10", "postflight", "--as-of", "2026-11-05")
    assert stale.returncode == 65 and "expected yesterday (2026-11-04)" in stale.stdout


def test_day_boundaries_follow_the_configured_time_zone(
    cli: Any, env: dict[str, str], conn: Any, tmp_path: Path
) -> None:
    seed_day(conn, date(2026, 10, 31), 2, hour=2)  # 22:00 on Oct 30 in New York (EDT)
    config = tmp_path / "m10.toml"
    config.write_text('[daily_stats]\ntimezone = "America/New_York"\n')
    proc = cli(
        "m10-daily-stats",
        "--config",
        str(config),
        "--start-date",
        "2026-10-30",
        "--until",
        "2026-10-31",
    )
    assert proc.returncode == 0, proc.stderr
    rows = rows_of(Path(env["M10_LOG_DIR"]) / "m10_stats_2026-10.csv")
    assert [(r["date"], r["outbox_enqueued"]) for r in rows] == [
        ("2026-10-30", "2"),
        ("2026-10-31", "0"),
    ]
    config.write_text('[daily_stats]\ntimezone = "Mars/Olympus"\n')
    bad = cli("m10-daily-stats", "--config", str(config))
    assert bad.returncode == 78 and "daily_stats.timezone" in bad.stderr


def test_a_corrupt_month_is_skipped_on_its_own_and_the_others_are_written(
    cli: Any, env: dict[str, str], seeded: Any
) -> None:
    log = Path(env["M10_LOG_DIR"])
    assert (
        cli("m10-daily-stats", "--start-date", "2026-10-29", "--until", "2026-10-30").returncode
        == 0
    )
    path = log / "m10_stats_2026-10.csv"
    lines = path.read_text().splitlines()
    lines[2] = "2026-10-30,not-a-number"
    path.write_text("\n".join(lines) + "\n")
    october = {k: v for k, v in stats_files(log).items() if "2026-10" in k}
    metrics = Path(env["M10_METRICS_DIR"]) / "m10_daily_stats.prom"

    proc = cli("m10-daily-stats", "--until", "2026-11-01")
    assert proc.returncode == 1, proc.stderr  # degraded: a month needs the operator
    assert f"{path}: line 3: expected 11 fields" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert {k: v for k, v in stats_files(log).items() if "2026-10" in k} == october
    assert [r["date"] for r in rows_of(log / "m10_stats_2026-11.csv")] == ["2026-11-01"]
    assert (log / "m10_stats_2026-11.csv.processed").exists()
    assert 'm10_daily_stats_bad_months{job="m10-daily-stats"} 1' in metrics.read_text()

    # Nothing else left to do: the bad month alone is bad input (65), still untouched,
    # and its gauge stays set until the file is fixed.
    again = cli("m10-daily-stats", "--until", "2026-11-01")
    assert again.returncode == 65, again.stderr
    assert f"{path}: line 3" in again.stderr and "Traceback" not in again.stderr
    assert {k: v for k, v in stats_files(log).items() if "2026-10" in k} == october
    assert 'm10_daily_stats_bad_months{job="m10-daily-stats"} 1' in metrics.read_text()

    path.unlink()  # the operator removes it: the month is rebuilt from the table
    (log / "m10_stats_2026-10.csv.processed").unlink()
    fixed = cli("m10-daily-stats", "--until", "2026-11-01")
    assert fixed.returncode == 0, fixed.stderr
    assert [r["date"] for r in rows_of(path)] == ["2026-10-29", "2026-10-30", "2026-10-31"]
    assert 'm10_daily_stats_bad_months{job="m10-daily-stats"} 0' in metrics.read_text()


def test_sigkill_during_export_leaves_previous_csv_and_marker(
    cli: Any, env: dict[str, str], seeded: Any, dsn: str
) -> None:
    import psycopg

    log = Path(env["M10_LOG_DIR"])
    assert (
        cli("m10-daily-stats", "--start-date", "2026-10-29", "--until", "2026-10-29").returncode
        == 0
    )
    before = stats_files(log)
    with psycopg.connect(dsn) as blocker:
        # The export blocks inside its stats query: kill it there, mid-pass.
        blocker.execute("LOCK TABLE m10_recovery.retention_jobs IN ACCESS EXCLUSIVE MODE")
        proc = subprocess.Popen(
            [str(BIN / "m10-daily-stats"), "--until", "2026-11-01"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            blocker.execute("SELECT pg_stat_clear_snapshot()")  # fresh view in this txn
            waiting = blocker.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                "'m10-daily-stats' AND wait_event_type = 'Lock'"
            ).fetchone()[0]
            if waiting:
                break
            time.sleep(0.05)
        assert waiting, "the export never reached its stats query"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        blocker.rollback()
    assert stats_files(log) == before
    with psycopg.connect(dsn, autocommit=True) as c:
        assert expire_leases(c) >= 1  # the killed holder's lease, as if its TTL ran out
    again = subprocess.run(
        [str(BIN / "m10-daily-stats"), "--until", "2026-11-01"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stderr
    assert [r["date"] for r in rows_of(log / "m10_stats_2026-10.csv")] == [
        "2026-10-29",
        "2026-10-30",
        "2026-10-31",
    ]


def test_postflight_catches_edited_csv_and_missing_day(
    cli: Any, env: dict[str, str], seeded: Any
) -> None:
    log = Path(env["M10_LOG_DIR"])
    assert (
        cli("m10-daily-stats", "--start-date", "2026-10-29", "--until", "2026-11-01").returncode
        == 0
    )
    path = log / "m10_stats_2026-10.csv"
    good = path.read_bytes()
    path.write_bytes(good.replace(b"2026-10-31,7,", b"2026-10-31,8,"))
    edited = cli("m10", "postflight", "--as-of", "2026-11-02")
    assert edited.returncode == 65
    assert f"{path}: sha256" in edited.stdout and "differs from the marker" in edited.stdout

    # a day missing, with a marker that agrees with the file: only the gap is wrong
    rows = [r for r in rows_of(path) if r["date"] != "2026-10-30"]
    data = render(rows)
    path.write_bytes(data)
    atomic_write_json(log / "m10_stats_2026-10.csv.processed", marker_for(path, data, rows))
    gap = cli("m10", "postflight", "--as-of", "2026-11-02")
    assert gap.returncode == 65
    assert "gap: 1 day(s) missing between 2026-10-29 and 2026-10-31" in gap.stdout
    assert "m10_stats_2026-11.csv" in gap.stdout  # the good file is still listed ok

    (log / "m10_stats_2026-11.csv.processed").unlink()
    missing = cli("m10", "postflight", "--as-of", "2026-11-02")
    assert (
        missing.returncode == 65
        and "marker m10_stats_2026-11.csv.processed is missing" in missing.stdout
    )


def test_dry_run_writes_nothing(cli: Any, env: dict[str, str], seeded: Any) -> None:
    proc = cli(
        "m10-daily-stats", "--dry-run", "--start-date", "2026-10-30", "--until", "2026-10-31"
    )
    assert proc.returncode == 0, proc.stderr
    assert summary(proc.stdout)["tasks"][0]["summary"]["would_compute"] == [
        "2026-10-30",
        "2026-10-31",
    ]
    assert stats_files(Path(env["M10_LOG_DIR"])) == {}


def test_sigkill_at_any_moment_never_leaves_a_torn_file(env: dict[str, str], conn: Any) -> None:
    """Kill a 3-month backfill at spread-out moments: every CSV and marker visible
    afterwards is complete (parses), and one plain run fills every day once and heals
    any marker left stale between the two renames."""
    from m10jobs.jobs.stats.statsfile import month_files, parse, read_marker

    log = Path(env["M10_LOG_DIR"])
    args = [str(BIN / "m10-daily-stats"), "--start-date", "2026-07-01", "--until", "2026-09-30"]
    for delay in (0.35, 0.5, 0.7):
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait(10)
        for path in month_files(log):
            parse(path)  # raises on a torn or duplicated file
            read_marker(path)  # raises on a torn marker
        expire_leases(conn)  # the killed holder's lease (if it took it) lapses
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    dates = [d for p in month_files(log) for d in parse(p).dates]
    assert len(dates) == len(set(dates)) == 92
    # A kill between a CSV's rename and its marker's left a stale marker: the plain rerun
    # above rewrote it (no operator step), so postflight passes.
    final = subprocess.run(
        [str(BIN / "m10"), "postflight", "--as-of", "2026-10-01"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert final.returncode == 0, final.stdout


def test_lock_held_elsewhere_exits_75_and_writes_nothing(
    cli: Any, env: dict[str, str], seeded: Any, tmp_path: Path
) -> None:
    """Another host computing: compute is skipped, export waits for it (here 1 s) and is
    skipped too rather than write a CSV without the day being added."""
    seeded.execute("SELECT m10_recovery.acquire_lock('m10:daily_stats', 'other:1:x', 60)")
    config = tmp_path / "m10.toml"
    config.write_text("[daily_stats]\ncompute_wait_seconds = 1\n")
    proc = cli(
        "m10-daily-stats",
        "--config",
        str(config),
        "--start-date",
        "2026-10-30",
        "--until",
        "2026-10-31",
    )
    assert proc.returncode == 75, proc.stderr
    assert "still held by other:1:x after waiting 1s" in proc.stderr
    assert stats_files(Path(env["M10_LOG_DIR"])) == {}


def test_missing_marker_is_rewritten_on_next_run(
    cli: Any, env: dict[str, str], seeded: Any
) -> None:
    log = Path(env["M10_LOG_DIR"])
    assert (
        cli("m10-daily-stats", "--start-date", "2026-10-29", "--until", "2026-10-31").returncode
        == 0
    )
    marker = log / "m10_stats_2026-10.csv.processed"
    good = marker.read_bytes()
    marker.unlink()
    assert cli("m10-daily-stats", "--until", "2026-10-31").returncode == 0
    assert marker.read_bytes() == good


def test_csv_renamed_but_marker_not_heals_on_a_plain_rerun(
    cli: Any, env: dict[str, str], seeded: Any
) -> None:
    """The kill point between the CSV's rename and its marker's: a new CSV beside the old
    marker.  The next plain run rewrites the marker; postflight then passes."""
    log = Path(env["M10_LOG_DIR"])
    assert (
        cli("m10-daily-stats", "--start-date", "2026-10-29", "--until", "2026-10-30").returncode
        == 0
    )
    marker = log / "m10_stats_2026-10.csv.processed"
    old_marker = marker.read_bytes()
    assert cli("m10-daily-stats", "--until", "2026-10-31").returncode == 0
    marker.write_bytes(old_marker)  # as if killed just before the marker's rename
    assert cli("m10", "postflight", "--as-of", "2026-11-01").returncode == 65
    again = cli("m10-daily-stats", "--until", "2026-10-31")
    assert again.returncode == 0, again.stderr
    assert summary(again.stdout)["tasks"][1]["summary"]["files"] == ["m10_stats_2026-10.csv"]
    ok = cli("m10", "postflight", "--as-of", "2026-11-01")
    assert ok.returncode == 0, ok.stdout
    marker.write_bytes(b"{torn")  # a damaged marker only describes the CSV: rewritten too
    assert cli("m10-daily-stats", "--until", "2026-10-31").returncode == 0
    assert cli("m10", "postflight", "--as-of", "2026-11-01").returncode == 0
