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
    with Lease(dsn, db.connect(dsn), "hb", "me:1:x", ttl=1) as lease:
        for _ in range(6):  # 3 s = three TTLs
            time.sleep(0.5)
            other = conn.execute("SELECT m10_recovery.acquire_lock('hb', 'them', 1) AS t"
                                 ).fetchone()["t"]
            assert other is None
            lease.check()
    # released on exit: free again
    assert conn.execute("SELECT m10_recovery.acquire_lock('hb', 'them', 1) AS t"
                        ).fetchone()["t"] is not None


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
              lock="test:loser", run=slow_pass, ttl_seconds=1)
    sys.exit(runner.run(job))
""")


def test_a_pass_that_loses_its_lease_stops_and_exits_1(dsn: str, conn: Conn,
                                                       env: dict[str, str]) -> None:
    proc = subprocess.Popen([sys.executable, "-c", LOSER], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("STARTED")
    started = time.monotonic()
    conn.execute("SELECT * FROM m10_recovery.force_release_lock('test:loser')")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert time.monotonic() - started < 5  # stopped, did not run its 20 s
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["tasks"][0]["status"] == "failed"
    assert "force-released" in summary["tasks"][0]["error"]
    assert "Traceback" not in err
