"""Lease properties, straight against the SQL functions (docs/contract.md, "Leases and fencing")."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.lease_support import expire_lease, wait_lapsed, wait_until

Conn = psycopg.Connection[dict[str, Any]]


def acquire(conn: Conn, name: str, holder: str, ttl: int = 60) -> int | None:
    return conn.execute(
        "SELECT m10_recovery.acquire_lock(%s, %s, %s) AS t", (name, holder, ttl)
    ).fetchone()["t"]


def release(conn: Conn, name: str, holder: str, token: int | None = None) -> bool:
    return conn.execute(
        "SELECT m10_recovery.release_lock(%s, %s, %s) AS r", (name, holder, token)
    ).fetchone()["r"]


def extend(conn: Conn, name: str, holder: str, token: int | None, ttl: int = 60) -> bool:
    return conn.execute(
        "SELECT m10_recovery.extend_lock(%s, %s, %s, %s) AS e", (name, holder, token, ttl)
    ).fetchone()["e"]


def test_grant_then_deny_then_release_frees(conn: Conn) -> None:
    token = acquire(conn, "job", "a")
    assert token is not None
    assert acquire(conn, "job", "b") is None
    assert release(conn, "job", "a", token) is True
    assert acquire(conn, "job", "b") > token


def test_not_reentrant_live_holder_extends_instead(conn: Conn) -> None:
    token = acquire(conn, "job", "a")
    assert acquire(conn, "job", "a") is None
    assert extend(conn, "job", "a", token) is True


def test_stranger_cannot_release_or_extend(conn: Conn) -> None:
    token = acquire(conn, "job", "a")
    assert release(conn, "job", "b") is False
    assert release(conn, "job", "b", token) is False
    assert extend(conn, "job", "b", token) is False
    assert release(conn, "job", "a", token + 1) is False  # wrong token
    assert extend(conn, "job", "a", token + 1) is False
    assert acquire(conn, "job", "c") is None  # still held by a
    assert release(conn, "job", "a", token) is True


def test_expiry_lets_another_take_over_with_a_higher_token(conn: Conn) -> None:
    first = acquire(conn, "job", "a")
    expire_lease(conn, "job")
    second = acquire(conn, "job", "b", ttl=60)
    assert second is not None and second > first
    # the stale holder can neither extend nor release the new lease
    assert extend(conn, "job", "a", first) is False
    assert release(conn, "job", "a", first) is False
    assert release(conn, "job", "a") is False
    assert (
        conn.execute(
            "SELECT holder_id FROM m10_recovery.distributed_locks WHERE lock_name = 'job'"
        ).fetchone()["holder_id"]
        == "b"
    )


def test_expired_holder_cannot_extend_its_own_lapsed_lease(conn: Conn) -> None:
    token = acquire(conn, "job", "a")
    expire_lease(conn, "job")
    assert extend(conn, "job", "a", token) is False
    assert release(conn, "job", "a", token) is False  # lapsed: honest false
    assert acquire(conn, "job", "b") is not None


def test_gc_deletes_only_expired_and_tokens_keep_rising(conn: Conn) -> None:
    t1 = acquire(conn, "gone", "a")
    live = acquire(conn, "live", "a", ttl=60)
    expire_lease(conn, "gone")
    assert conn.execute("SELECT m10_recovery.reclaim_expired_locks() AS n").fetchone()["n"] == 1
    names = [
        r["lock_name"]
        for r in conn.execute("SELECT lock_name FROM m10_recovery.distributed_locks").fetchall()
    ]
    assert names == ["live"]
    t2 = acquire(conn, "gone", "b")
    assert t2 > t1 and t2 > live


@pytest.mark.parametrize(
    "call, args",
    [
        ("acquire_lock(%s, %s, %s)", ("", "a", 60)),
        ("acquire_lock(%s, %s, %s)", ("x", "", 60)),
        ("acquire_lock(%s, %s, %s)", (None, "a", 60)),
        ("acquire_lock(%s, %s, %s)", ("x", "a", 0)),
        ("acquire_lock(%s, %s, %s)", ("x", "a", 86401)),
        ("acquire_lock(%s, %s, %s)", ("x", "a", -5)),
        ("extend_lock(%s, %s, 1, %s)", ("x", "a", 0)),
        ("extend_lock(%s, %s, 1, %s)", ("", "a", 10)),
        ("release_lock(%s, %s)", ("x", "")),
    ],
)
def test_bad_parameters_raise_22023(conn: Conn, call: str, args: tuple[Any, ...]) -> None:
    with pytest.raises(psycopg.Error) as info:
        conn.execute(f"SELECT m10_recovery.{call}", args)
    assert info.value.sqlstate == "22023"


def test_fence_rejects_a_lapsed_holder_inside_its_transaction(conn: Conn, dsn: str) -> None:
    token = acquire(conn, "job", "a")
    conn.execute("SELECT m10_recovery.assert_lease('job', 'a', %s)", (token,))
    expire_lease(conn, "job")
    acquire(conn, "job", "b")
    with psycopg.connect(dsn) as c, pytest.raises(psycopg.Error) as info, c.transaction():
        c.execute("SELECT m10_recovery.assert_lease('job', 'a', %s)", (token,))
    assert info.value.sqlstate == "M10LL"


WORKER = textwrap.dedent("""
    import sys, time, psycopg
    dsn, holder, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    c = psycopg.connect(dsn, autocommit=True)
    got = 0
    for _ in range(rounds):
        while True:
            t = c.execute("SELECT m10_recovery.acquire_lock('shared', %s, 30)",
                          (holder,)).fetchone()[0]
            if t is not None:
                break
        inside = c.execute("UPDATE probe SET n = n + 1, total = total + 1 "
                           "RETURNING n").fetchone()[0]
        if inside != 1:
            print("OVERLAP", inside, flush=True)
            sys.exit(3)
        time.sleep(0.001)
        c.execute("UPDATE probe SET n = n - 1")
        assert c.execute("SELECT m10_recovery.release_lock('shared', %s, %s)",
                         (holder, t)).fetchone()[0]
        got += 1
    print("DONE", got)
""")


def test_eight_processes_never_overlap_inside_the_lock(conn: Conn, dsn: str) -> None:
    conn.execute("CREATE TABLE probe (n int NOT NULL, total int NOT NULL)")
    conn.execute("INSERT INTO probe VALUES (0, 0)")
    rounds = 40
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, dsn, f"w{i}", str(rounds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, outs
    row = conn.execute("SELECT n, total FROM probe").fetchone()
    assert row == {"n": 0, "total": 8 * rounds}


HOLDER_TTL = 4  # the subject, but long enough that a busy machine's delays stay well inside
HOLDER = textwrap.dedent(f"""
    import sys, time, psycopg
    c = psycopg.connect(sys.argv[1], autocommit=True)
    t = c.execute("SELECT m10_recovery.acquire_lock('victim', 'doomed', {HOLDER_TTL})")
    t = t.fetchone()[0]
    print(t, flush=True)
    while True:   # keeps extending: only a SIGKILL stops it
        c.execute("SELECT m10_recovery.extend_lock('victim', 'doomed', %s, {HOLDER_TTL})", (t,))
        time.sleep(0.3)
""")


def _lease_row(conn: Conn, name: str) -> dict[str, Any]:
    return conn.execute(
        "SELECT holder_id, acquired_at, expires_at, clock_timestamp() AS now"
        " FROM m10_recovery.distributed_locks WHERE lock_name = %s",
        (name,),
    ).fetchone()


def test_holder_killed_with_sigkill_is_taken_over_after_its_ttl(conn: Conn, dsn: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, dsn], stdout=subprocess.PIPE, text=True)
    token = int(proc.stdout.readline())
    first_expiry = _lease_row(conn, "victim")["expires_at"]
    # beyond its first TTL (database clock): alive, so extended and still held
    wait_until(lambda: _lease_row(conn, "victim")["now"] > first_expiry, "one TTL to pass")
    assert acquire(conn, "victim", "heir") is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    last_expiry = _lease_row(conn, "victim")["expires_at"]
    assert acquire(conn, "victim", "heir") is None  # lease still runs its course
    new = None

    def taken() -> bool:
        nonlocal new
        new = acquire(conn, "victim", "heir")
        return new is not None

    wait_until(taken, "the heir to take the lapsed lease")
    assert new > token
    # after the dead holder's last expiry by the database clock, not before
    assert _lease_row(conn, "victim")["acquired_at"] >= last_expiry


MID_COMMIT = textwrap.dedent("""
    import sys, time, psycopg
    c = psycopg.connect(sys.argv[1], autocommit=True)
    t = c.execute("SELECT m10_recovery.acquire_lock('frozen', 'paused', 4)").fetchone()[0]
    c.execute("BEGIN")
    c.execute("SELECT m10_recovery.assert_lease('frozen', 'paused', %s)", (t,))
    c.execute("INSERT INTO probe VALUES (1, 1)")
    print(t, flush=True)
    sys.stdin.readline()  # frozen here by the test's SIGSTOP, woken by SIGCONT
    try:
        c.execute("COMMIT")
        print("committed", flush=True)
    except psycopg.Error as exc:
        print(exc.sqlstate, flush=True)
""")


def test_holder_frozen_mid_commit_is_rolled_back_and_taken_over(conn: Conn, dsn: str) -> None:
    """SIGSTOP inside a fenced transaction: the row it locked is freed soon after the
    lease lapses (the server ends the idle transaction) and its write never lands."""
    conn.execute("SET statement_timeout = '15s'")  # a regression fails rather than hangs
    conn.execute("CREATE TABLE probe (n int NOT NULL, total int NOT NULL)")
    proc = subprocess.Popen(
        [sys.executable, "-c", MID_COMMIT, dsn],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    token = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGSTOP)
    expiry = _lease_row(conn, "frozen")["expires_at"]
    try:
        assert acquire(conn, "frozen", "heir") is None  # its lease is still live
        new = None
        deadline = time.monotonic() + 60  # a regression fails rather than hangs
        while new is None and time.monotonic() < deadline:
            new = acquire(conn, "frozen", "heir")
        # taken while the holder is still frozen (it wakes only below): after its TTL,
        # by the database clock, not "whenever it wakes up"
        assert new is not None and new > token
        assert _lease_row(conn, "frozen")["acquired_at"] >= expiry
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    out, _ = proc.communicate("\n", timeout=30)
    assert out.split()[-1] == "25P03"  # the server ended its transaction: nothing committed
    assert conn.execute("SELECT count(*) AS n FROM probe").fetchone()["n"] == 0


ROW_HOLDER = textwrap.dedent("""
    import sys, psycopg
    dsn, name, holder, ttl, gate = sys.argv[1:6]
    with psycopg.connect(dsn) as c:   # one transaction, committed when the block ends
        # acquired here, just before the fence: a slow start cannot eat a short TTL
        t = c.execute("SELECT m10_recovery.acquire_lock(%s, %s, %s)",
                      (name, holder, int(ttl))).fetchone()[0]
        c.commit()
        c.execute("SELECT m10_recovery.assert_lease(%s, %s, %s)", (name, holder, t))
        print(t, flush=True)
        # busy in a statement (keeps the row FOR SHARE) until the test opens the gate
        c.execute("SELECT pg_advisory_xact_lock(%s)", (int(gate),))
        released = c.execute("SELECT clock_timestamp() AS t").fetchone()[0]
    print(released.isoformat(), flush=True)
""")


class RowHolder:
    """A holder's fenced transaction, busy in a statement with the lease row locked
    until let_go(): what it waits for is an event the test controls, not a sleep."""

    def __init__(self, dsn: str, name: str, holder: str, ttl: int) -> None:
        self.gate_key = random.randrange(1, 2**31)
        self.gate = psycopg.connect(dsn, autocommit=True)
        self.gate.execute("SELECT pg_advisory_lock(%s)", (self.gate_key,))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ROW_HOLDER, dsn, name, holder, str(ttl), str(self.gate_key)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.token = int(self.proc.stdout.readline())
        wait_until(lambda: self.waiting("advisory") == 1, "the holder to be busy")

    def waiting(self, locktype: str) -> int:
        """Backends of this database waiting on a lock of this type."""
        return self.gate.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE NOT l.granted AND l.locktype = %s AND a.datname = current_database()",
            (locktype,),
        ).fetchone()[0]

    def let_go(self) -> datetime:
        """End the busy statement; when the transaction ended (database clock, read
        just before its COMMIT)."""
        self.gate.execute("SELECT pg_advisory_unlock(%s)", (self.gate_key,))
        out, _ = self.proc.communicate(timeout=30)
        self.gate.close()
        assert self.proc.returncode == 0, out
        return datetime.fromisoformat(out.strip().splitlines()[-1])

    def while_queued(self, call: Callable[[], Any]) -> tuple[Any, datetime]:
        """Run call, let go once it queues behind the row; its result and the release."""
        result: list[Any] = []
        t = threading.Thread(target=lambda: result.append(call()))
        t.start()
        wait_until(lambda: self.waiting("tuple") + self.waiting("transactionid") > 0, "a queue")
        released = self.let_go()
        t.join(timeout=60)
        assert result, "the queued call failed"
        return result[0], released


def test_busy_fenced_commit_past_expiry_keeps_the_row_but_nobody_hangs(
    conn: Conn, dsn: str, cli: Any
) -> None:
    """A fenced transaction still running a statement keeps its protection; contenders
    give up (after 2 s) instead of waiting for it."""
    conn.execute("SET statement_timeout = '15s'")  # a regression fails rather than hangs
    busy = RowHolder(dsn, "slow", "committer", ttl=2)
    wait_lapsed(conn, "slow")  # the lease has lapsed; the commit is still running
    assert acquire(conn, "slow", "heir") is None
    assert conn.execute("SELECT m10_recovery.reclaim_expired_locks() AS n").fetchone()["n"] == 0
    forced = cli("m10", "locks", "release", "slow", "--force")
    assert forced.returncode == 75, forced.stderr
    assert "committing right now" in forced.stderr and "Traceback" not in forced.stderr
    # nobody waited for the commit: it is still running, held open by the test
    assert busy.proc.poll() is None
    busy.let_go()
    assert acquire(conn, "slow", "heir") > busy.token


def test_takeover_after_waiting_for_the_row_is_stamped_after_the_wait(conn: Conn, dsn: str) -> None:
    """The old lease lapses while its holder's fenced transaction still has the row; the
    heir waits for that transaction, and its lease starts when it got the row, with its
    whole TTL."""
    conn.execute("SET statement_timeout = '15s'")  # a regression fails rather than hangs
    holder = RowHolder(dsn, "waited", "old", ttl=1)
    wait_lapsed(conn, "waited")  # lapsed, but the row is still locked
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as heir:
        # it really queues behind the holder's transaction (while_queued waits for that)
        new, released = holder.while_queued(lambda: acquire(heir, "waited", "heir", ttl=60))
    assert new is not None and new > holder.token
    row = conn.execute(
        "SELECT holder_id, acquired_at, expires_at "
        "FROM m10_recovery.distributed_locks WHERE lock_name = 'waited'"
    ).fetchone()
    assert row["holder_id"] == "heir"
    assert row["acquired_at"] >= released, (row, released)
    assert row["expires_at"] - row["acquired_at"] == timedelta(seconds=60)


def test_extend_after_waiting_for_the_row_judges_and_stamps_after_the_wait(
    conn: Conn, dsn: str
) -> None:
    """An extend that queued behind a fenced transaction: a lease still live after the
    wait gets its full TTL from then; one that lapsed during the wait is not revived."""
    conn.execute("SET statement_timeout = '15s'")
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as other:
        live = RowHolder(dsn, "live", "a", ttl=60)
        ok, released = live.while_queued(lambda: extend(other, "live", "a", live.token, ttl=60))
        assert ok is True
        row = conn.execute(
            "SELECT extended_at, expires_at FROM m10_recovery.distributed_locks "
            "WHERE lock_name = 'live'"
        ).fetchone()
        assert row["extended_at"] >= released, (row, released)
        assert row["expires_at"] - row["extended_at"] == timedelta(seconds=60)

        # the TTL is the subject here: 1 s, so it lapses within the extend's 2 s wait
        lapsing = RowHolder(dsn, "lapsing", "a", ttl=1)
        result: list[bool] = []
        t = threading.Thread(
            target=lambda: result.append(extend(other, "lapsing", "a", lapsing.token, ttl=60))
        )
        t.start()
        wait_until(lambda: lapsing.waiting("tuple") + lapsing.waiting("transactionid") > 0, "q")
        wait_lapsed(conn, "lapsing")
        lapsing.let_go()
        t.join(timeout=60)
    assert result == [False]  # lapsed while it waited
    assert acquire(conn, "lapsing", "b") is not None
