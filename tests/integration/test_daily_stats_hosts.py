"""m10-daily-stats on several hosts (own log/state dirs and M10_HOSTNAME, one database):
every host's CSVs are complete and identical whichever host computed which day, and a
backfill past the outbox's retention is refused instead of writing zeros."""

from __future__ import annotations

import subprocess
import time
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import BIN
from tests.stats_support import days, seed_day, stats_files, summary

DAYS = days(date(2026, 10, 28), 6)  # across a month boundary


def host(env: dict[str, str], tmp_path: Path, name: str) -> dict[str, str]:
    return {
        **env,
        "M10_HOSTNAME": name,
        "M10_LOG_DIR": str(tmp_path / name / "log"),
        "M10_STATE_DIR": str(tmp_path / name / "state"),
    }


def run(h: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "m10-daily-stats"), *args], env=h, capture_output=True, text=True, timeout=120
    )


def spawn(h: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "m10-daily-stats"), *args],
        env=h,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_hosts_alternating_days_all_have_complete_identical_csvs(
    env: dict[str, str], conn: Any, tmp_path: Path
) -> None:
    for n, day in enumerate(DAYS):
        seed_day(conn, day, n + 2, synthetic=n % 3)
    a, b, c = (host(env, tmp_path, n) for n in ("host-a", "host-b", "host-c"))
    # Days 1-5: the hosts take turns, each run alone (the winner computes and exports,
    # the other one's run that day finds it computed and only exports).
    for n, day in enumerate(DAYS[:5]):
        winner, other = (a, b) if n % 2 == 0 else (b, a)
        first = ("--start-date", day.isoformat()) if n == 0 else ()
        won = run(winner, *first, "--until", day.isoformat())
        assert won.returncode == 0, won.stderr
        assert summary(won.stdout)["tasks"][0]["summary"]["computed"] == [day.isoformat()]
        lost = run(other, *first, "--until", day.isoformat())
        assert lost.returncode == 0, lost.stderr
        assert summary(lost.stdout)["tasks"][0]["summary"]["computed"] == []
    # Day 6: both at once, host-a's compute held up inside its stats query: host-b's
    # compute is skipped and its export waits for host-a's day rather than miss it.
    until = ("--until", DAYS[5].isoformat())
    with psycopg.connect(env["M10_DATABASE_URL"]) as blocker:
        blocker.execute("LOCK TABLE m10_recovery.retention_jobs IN ACCESS EXCLUSIVE MODE")
        pa = spawn(a, *until)
        _wait_for(lambda: "host-a:" in _holder(conn), "host-a never took m10:daily_stats")
        pb = spawn(b, *until)
        time.sleep(1.5)
        assert pb.poll() is None, pb.communicate()  # waiting for host-a's compute
        blocker.rollback()
    _, err_a = pa.communicate(timeout=60)
    out_b, err_b = pb.communicate(timeout=60)
    assert pa.returncode == 0 and pb.returncode == 0, (err_a, err_b)
    tasks_b = summary(out_b)["tasks"]
    assert tasks_b[0]["status"] == "skipped" and tasks_b[1]["status"] == "ok"
    assert "waiting up to 60s" in err_b
    # A third host that never won a day still gets every month, complete.
    late = run(c, *until)
    assert late.returncode == 0, late.stderr

    files = [stats_files(Path(h["M10_LOG_DIR"])) for h in (a, b, c)]
    assert files[0] == files[1] == files[2]
    assert sorted(files[0]) == [
        "m10_stats_2026-10.csv",
        "m10_stats_2026-10.csv.processed",
        "m10_stats_2026-11.csv",
        "m10_stats_2026-11.csv.processed",
    ]
    csv_days = [
        line.split(",")[0]
        for name in ("m10_stats_2026-10.csv", "m10_stats_2026-11.csv")
        for line in files[0][name].decode().splitlines()[1:]
    ]
    assert csv_days == [d.isoformat() for d in DAYS]
    enqueued = [
        line.split(",")[1] for line in files[0]["m10_stats_2026-10.csv"].decode().splitlines()[1:]
    ]
    assert enqueued == ["2", "4", "6", "5"]  # n + 2 events plus n % 3 synthetic ones
    hosts = {r["host"] for r in conn.execute("SELECT host FROM m10_recovery.daily_stats")}
    assert hosts == {"host-a", "host-b"}
    for h in (a, b, c):
        post = subprocess.run(
            [str(BIN / "m10"), "postflight", "--as-of", "2026-11-03"],
            env=h,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert post.returncode == 0, post.stdout


def _holder(conn: Any) -> str:
    row = conn.execute(
        "SELECT holder_id FROM m10_recovery.distributed_locks WHERE lock_name = 'm10:daily_stats'"
    ).fetchone()
    return row["holder_id"] if row else ""


def _wait_for(cond: Any, message: str) -> None:
    deadline = time.monotonic() + 20
    while not cond():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def test_backfill_past_retention_is_refused_and_writes_no_zeros(
    env: dict[str, str], conn: Any, tmp_path: Path
) -> None:
    for day in DAYS:
        seed_day(conn, day, 3)
    a, b = host(env, tmp_path, "host-a"), host(env, tmp_path, "host-b")
    assert run(a, "--start-date", "2026-10-28", "--until", "2026-10-28").returncode == 0
    # The outbox's retention then deleted everything created before Oct 31.
    conn.execute("DELETE FROM m10_recovery.outbox WHERE created_at < '2026-10-31'")
    conn.execute("""INSERT INTO m10_recovery.retention_jobs
                    (run_id, policy, target, cutoff, status, rows_deleted, finished_at)
                    VALUES ('r', 'outbox', 'm10_recovery.outbox', '2026-10-31 00:00+00',
                            'succeeded', 9, '2026-10-31 00:00+00')""")
    before = stats_files(Path(a["M10_LOG_DIR"]))
    refused = run(a, "--until", "2026-11-02")
    assert refused.returncode == 65, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if '"ERROR"' in line]
    assert len(errors) == 1 and "day 2026-10-29 (and 1 more up to 2026-10-30)" in errors[0]
    assert "rerun with --start-date 2026-10-31" in errors[0] and "Traceback" not in refused.stderr
    assert [r["day"] for r in conn.execute("SELECT day FROM m10_recovery.daily_stats")] == [
        date(2026, 10, 28)
    ]  # nothing computed, certainly no zeros
    assert stats_files(Path(a["M10_LOG_DIR"])) == before
    # what was computed before retention passed it still reaches a host that never had it
    fresh = run(b, "--start-date", "2026-10-31", "--until", "2026-11-02")
    assert fresh.returncode == 0, fresh.stderr
    october = stats_files(Path(b["M10_LOG_DIR"]))["m10_stats_2026-10.csv"].decode()
    assert [line[:13] for line in october.splitlines()[1:]] == ["2026-10-28,3,", "2026-10-31,3,"]


def test_stats_as_a_member_of_m10_ops(
    env: dict[str, str], conn: Any, dsn: str, tmp_path: Path
) -> None:
    """The units log in as a role that is only a member of m10_ops (not a superuser)."""
    conn.execute("CREATE ROLE statsjob_t LOGIN IN ROLE m10_ops")
    seed_day(conn, DAYS[0], 4)
    job = {
        **host(env, tmp_path, "host-a"),
        "M10_DATABASE_URL": dsn.replace("postgresql://postgres@", "postgresql://statsjob_t@"),
    }
    proc = run(job, "--start-date", DAYS[0].isoformat(), "--until", DAYS[0].isoformat())
    assert proc.returncode == 0, proc.stderr
    assert (
        conn.execute("SELECT outbox_enqueued FROM m10_recovery.daily_stats").fetchone()[
            "outbox_enqueued"
        ]
        == 4
    )
