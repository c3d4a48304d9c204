"""The Python lease client and the runner around it, with real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from typing import Any

import psycopg

from m10jobs.edges import db
from m10jobs.edges.lease import Lease, LockBusy

Conn = psycopg.Connection[dict[str, Any]]


def test_heartbeat_keeps_the_lease_past_its_ttl(conn: Conn, dsn: str) -> None:
    ttl = 2  # the subject: short, yet several heartbeats long on a busy machine
    with Lease(dsn, db.connect(dsn), "hb", "me:1:x", ttl=ttl) as lease:
        first_expiry = conn.execute(
            "SELECT expires_at FROM m10_recovery.distributed_locks WHERE lock_name = 'hb'"
        ).fetchone()["expires_at"]
        while True:  # until two more TTLs have passed by the database clock
            row = conn.execute(
                "SELECT m10_recovery.acquire_lock('hb', 'them', 1) AS t,"
                " clock_timestamp() > %s + make_interval(secs => %s) AS done",
                (first_expiry, 2 * ttl),
            ).fetchone()
            assert row["t"] is None
            lease.check()
            if row["done"]:
                break
            time.sleep(0.2)
    # released on exit: free again
    assert (
        conn.execute("SELECT m10_recovery.acquire_lock('hb', 'them', 1) AS t").fetchone()["t"]
        is not None
    )


def test_busy_lease_raises_lockbusy_naming_the_holder(conn: Conn, dsn: str) -> None:
    conn.execute("SELECT m10_recovery.acquire_lock('busy', 'host-a:42:run', 60)")
    try:
        Lease(dsn, db.connect(dsn), "busy", "me", ttl=5).acquire()
    except LockBusy as exc:
        assert "host-a:42:run" in str(exc) and exc.exit_code == 75
    else:
        raise AssertionError("expected LockBusy")


LOSER = textwrap.dedent("""
    import sys, time
    from m10jobs.registry import Job
    from m10jobs import runner

    def slow_pass(ctx):
        print("STARTED", ctx.lease.token, flush=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.05)
        return {"finished": True}

    job = Job(script="m10-test-loser", summary="t", example="t", schedule="daily",
              lock="test:loser", run=slow_pass, ttl_seconds=30)
    sys.exit(runner.run(job))
""")


def test_a_pass_that_loses_its_lease_stops_and_exits_1(
    dsn: str, conn: Conn, env: dict[str, str]
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", LOSER],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().startswith("STARTED")
    started = time.monotonic()
    conn.execute("SELECT * FROM m10_recovery.force_release_lock('test:loser')")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    # stopped, did not run its 20 s (a guard with room for a busy machine)
    assert time.monotonic() - started < 15
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["tasks"][0]["status"] == "failed"
    assert "force-released" in summary["tasks"][0]["error"]
    assert "Traceback" not in err


FROZEN_IN_TXN = textwrap.dedent("""
    import sys
    from m10jobs.registry import Job
    from m10jobs import runner

    def stuck_pass(ctx):
        ctx.conn.execute("BEGIN")
        ctx.conn.execute("UPDATE probe SET n = n + 1")
        print("LOCKED", flush=True)
        sys.stdin.readline()  # frozen here (SIGSTOP) with the row locked, not yet fenced
        ctx.conn.execute("COMMIT")
        return {"committed": True}

    job = Job(script="m10-test-frozen", summary="t", example="t", schedule="daily",
              lock="test:frozen", run=stuck_pass, ttl_seconds=5)  # = the floor
    sys.exit(runner.run(job))
""")


def test_a_pass_frozen_inside_any_transaction_releases_its_rows(
    dsn: str, conn: Conn, env: dict[str, str]
) -> None:
    """Not only fenced commits: a leased pass paused with rows locked is cut off by the
    server once its lease (floor 5 s) is over, so the next holder does not hang."""
    import os
    import signal

    from m10jobs.edges.lease import IDLE_TRANSACTION_FLOOR_S

    conn.execute("CREATE TABLE probe (n int NOT NULL)")
    conn.execute("INSERT INTO probe VALUES (0)")
    proc = subprocess.Popen(
        [sys.executable, "-c", FROZEN_IN_TXN],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "LOCKED"
    os.kill(proc.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        conn.execute("SET statement_timeout = '20s'")  # a regression fails, not hangs
        conn.execute("UPDATE probe SET n = n + 10")
        waited = time.monotonic() - t0
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate("\n", timeout=30)
    # the 5 s bound (counted from before the SIGSTOP), not the 20 s statement timeout:
    # the bound is the subject; the upper side has room for a busy machine
    assert IDLE_TRANSACTION_FLOOR_S - 2.5 <= waited < 15, waited
    assert conn.execute("SELECT n FROM probe").fetchone()["n"] == 10  # its +1 rolled back
    assert proc.returncode == 1, err
    assert "lease" in json.loads(out.strip().splitlines()[-1])["tasks"][0]["error"]
    assert "Traceback" not in err
