"""The processor under SIGKILL, a concurrent start, and a SIGSTOP past its lease TTL:
real processes, bounded in count and time."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import redis

from tests.conftest import BIN, run_cli
from tests.lease_support import wait_lapsed
from tests.outbox_support import bulk_enqueue, write_config

SCRIPT = "m10-outbox-processor"


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / SCRIPT), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_exactly_once(conn: Any, redis_url: str, n: int) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    stream = client.xrange("m10:outbox")
    per_event = Counter(int(f["event_id"]) for _, f in stream)
    assert len(stream) == n and len(per_event) == n, (len(stream), len(per_event))
    logged = conn.execute(
        "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM m10_recovery.replay_log"
    ).fetchone()
    assert (logged["n"], logged["d"]) == (n, n)
    mismatched = conn.execute(
        "SELECT count(*) AS n FROM m10_recovery.outbox o JOIN m10_recovery.replay_log r "
        "ON r.event_id = o.id WHERE o.status <> 'published' "
        "OR o.stream_entry_id <> r.stream_entry_id"
    ).fetchone()["n"]
    assert mismatched == 0
    by_id = {int(f["event_id"]): eid for eid, f in stream}
    rows = conn.execute(
        "SELECT event_id, stream_entry_id FROM m10_recovery.replay_log ORDER BY random() LIMIT 200"
    ).fetchall()
    assert all(by_id[r["event_id"]] == r["stream_entry_id"] for r in rows)


def drain(env: dict[str, str], *args: str, deadline_s: float = 60) -> None:
    """Run passes until one exits 0 with nothing left (75: a dead holder's lease lapses)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        proc = run_cli(SCRIPT, *args, env=env)
        if proc.returncode == 0 and '"backlog": 0' in proc.stdout:
            return
        assert proc.returncode in (0, 75), proc.stderr
        time.sleep(0.3)
    raise AssertionError("backlog not drained in time")


def _published(conn: Any) -> int:
    return conn.execute("SELECT count(*) AS n FROM m10_recovery.replay_log").fetchone()["n"]


def _wait_progress(conn: Any, proc: subprocess.Popen[str], before: int) -> bool:
    """Wait until the pass has committed a batch (the cut then lands mid-drain, however fast
    the machine drains); False when it ended first (a 75, or nothing left)."""
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        if _published(conn) > before:
            return True
        time.sleep(0.01)
    return False


def test_sigkill_many_times_while_draining_10k(
    conn: Any, env: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    n = 10_000
    bulk_enqueue(conn, n, aggregates=50)
    # 2 a batch: many commits, each a crash window, and a backlog no pass drains at once
    cfg = write_config(tmp_path, "[outbox]\nbatch_size = 2\n")
    # the killed passes' TTL is short: a killed holder's lease is orphaned at once, and one
    # cut while its session still lingers lapses within a second
    short = {**env, "M10_LEASE_TTL_SECONDS": "1"}
    rng = random.Random(3)
    kills = 0
    for _ in range(40):  # bounded; a start that meets a dead holder's live lease exits 75
        if kills >= 10:
            break
        before = _published(conn)
        proc = start(short, "--config", str(cfg))
        if rng.random() < 0.3:  # anywhere: starting up, claiming, publishing
            time.sleep(rng.uniform(0.05, 0.5))
        elif _wait_progress(conn, proc, before):  # mid-drain: between publish and commit
            time.sleep(rng.uniform(0, 0.1))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=30)
        time.sleep(rng.uniform(0, 1.1))  # sometimes the dead holder's lease is still live
    assert kills >= 8
    assert 0 < _published(conn) < n  # the kills landed mid-drain
    drain(env, "--config", str(cfg))
    assert_exactly_once(conn, redis_url, n)


def test_two_processors_started_together_one_leads(
    conn: Any, env: dict[str, str], redis_url: str
) -> None:
    n = 20_000
    bulk_enqueue(conn, n)
    a, b = start(env), start(env)
    (_, err_a), (_, err_b) = a.communicate(timeout=120), b.communicate(timeout=120)
    assert sorted([a.returncode, b.returncode]) == [0, 75], (err_a[-500:], err_b[-500:])
    loser = err_a if a.returncode == 75 else err_b
    assert "m10:outbox_processor" in loser and "skipped" in loser
    assert_exactly_once(conn, redis_url, n)


def test_leader_stopped_past_its_ttl_cannot_commit(
    conn: Any, env: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    n = 20_000
    bulk_enqueue(conn, n)
    cfg = write_config(tmp_path, "[outbox]\nbatch_size = 50\n")
    # the leader's TTL is the subject (it lapses while the leader is frozen); 4 s keeps
    # its heartbeats safe on a busy machine until then; the successors use the usual TTL
    old = start({**env, "M10_LEASE_TTL_SECONDS": "4"}, "--config", str(cfg))
    deadline = time.monotonic() + 30  # mid-pass: it holds the lease and committed a batch
    while not conn.execute("SELECT count(*) AS n FROM m10_recovery.replay_log").fetchone()["n"]:
        assert time.monotonic() < deadline, "the leader never committed a batch"
        time.sleep(0.02)
    assert old.poll() is None, "the leader finished before it could be stopped"
    old.send_signal(signal.SIGSTOP)
    try:
        wait_lapsed(conn, "m10:outbox_processor")  # while the leader is frozen
        token_of_old = conn.execute(
            "SELECT max(fencing_token) AS t FROM m10_recovery.replay_log"
        ).fetchone()["t"]
        committed_by_old = conn.execute(
            "SELECT count(*) AS n FROM m10_recovery.replay_log"
        ).fetchone()["n"]
        drain(env, "--config", str(cfg))
    finally:
        old.send_signal(signal.SIGCONT)
    _, err = old.communicate(timeout=60)
    assert old.returncode == 1, err[-1000:]
    assert "lease" in err and "Traceback" not in err
    if token_of_old is not None:
        after = conn.execute(
            "SELECT count(*) AS n FROM m10_recovery.replay_log WHERE fencing_token = %s",
            (token_of_old,),
        ).fetchone()["n"]
        assert after == committed_by_old  # nothing committed by the old leader after the pause
    assert_exactly_once(conn, redis_url, n)


def test_leader_stopped_inside_its_fenced_commit_does_not_wedge_the_lock(
    conn: Any, env: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    """The unlucky moment of the test above, made certain: the leader is frozen after
    its fenced commit statement ran but before COMMIT, so its transaction holds the
    lease row.  Its successor takes over once the lease lapses instead of hanging."""
    n = 2_000
    bulk_enqueue(conn, n)
    cfg = write_config(tmp_path, "[outbox]\nbatch_size = 50\n")
    conn.execute("SET statement_timeout = '30s'")
    gate = psycopg.connect(conn.info.dsn, password=conn.info.password)
    gate.execute("LOCK TABLE m10_recovery.replay_log IN SHARE ROW EXCLUSIVE MODE")
    old = start({**env, "M10_LEASE_TTL_SECONDS": "4"}, "--config", str(cfg))  # see above
    try:
        deadline = time.monotonic() + 30
        while not conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND application_name = 'm10-outbox-processor:commit'"
        ).fetchone()["n"]:
            assert time.monotonic() < deadline and old.poll() is None, "no commit came"
            time.sleep(0.05)
        old.send_signal(signal.SIGSTOP)
        gate.commit()  # its commit statement now completes; its COMMIT never comes
        drain(env, "--config", str(cfg))  # its deadline: a wedged lock fails, not hangs
    finally:
        old.send_signal(signal.SIGCONT)
        gate.close()
    _, err = old.communicate(timeout=60)
    assert old.returncode == 1, err[-1000:]
    assert "lease" in err and "Traceback" not in err
    assert_exactly_once(conn, redis_url, n)


def test_postgres_connections_lost_mid_pass_exit_69_then_nothing_lost_or_doubled(
    conn: Any, env: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    n = 10_000
    bulk_enqueue(conn, n)
    cfg = write_config(tmp_path, "[outbox]\nbatch_size = 5\n")  # a drain of seconds
    proc = start(env, "--config", str(cfg))
    assert _wait_progress(conn, proc, 0), "the pass ended before its connections could be cut"
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name LIKE 'm10-outbox-processor%%'"
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 69, err[-1000:]
    assert "PostgreSQL" in err and "Traceback" not in err
    conn.execute("DELETE FROM m10_recovery.distributed_locks")  # the dead pass's lease
    drain(env, "--config", str(cfg))
    assert_exactly_once(conn, redis_url, n)
