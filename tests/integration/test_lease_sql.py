"""Lease properties, straight against the SQL functions (docs/contract.md, "Leases and fencing")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

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
    first = acquire(conn, "job", "a", ttl=1)
    time.sleep(1.2)
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
    token = acquire(conn, "job", "a", ttl=1)
    time.sleep(1.2)
    assert extend(conn, "job", "a", token) is False
    assert release(conn, "job", "a", token) is False  # lapsed: honest false
    assert acquire(conn, "job", "b") is not None


def test_gc_deletes_only_expired_and_tokens_keep_rising(conn: Conn) -> None:
    t1 = acquire(conn, "gone", "a", ttl=1)
    live = acquire(conn, "live", "a", ttl=60)
    time.sleep(1.2)
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
    token = acquire(conn, "job", "a", ttl=1)
    conn.execute("SELECT m10_recovery.assert_lease('job', 'a', %s)", (token,))
    time.sleep(1.2)
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


HOLDER = textwrap.dedent("""
    import sys, time, psycopg
    c = psycopg.connect(sys.argv[1], autocommit=True)
    t = c.execute("SELECT m10_recovery.acquire_lock('victim', 'doomed', 2)").fetchone()[0]
    print(t, flush=True)
    while True:   # keeps extending: only a SIGKILL stops it
        c.execute("SELECT m10_recovery.extend_lock('victim', 'doomed', %s, 2)", (t,))
        time.sleep(0.3)
""")


def test_holder_killed_with_sigkill_is_taken_over_after_its_ttl(conn: Conn, dsn: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, dsn], stdout=subprocess.PIPE, text=True)
    token = int(proc.stdout.readline())
    time.sleep(2.5)  # beyond one TTL: alive, so extended
    assert acquire(conn, "victim", "heir") is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = time.monotonic()
    assert acquire(conn, "victim", "heir") is None  # lease still runs its course
    deadline = killed_at + 5
    new = None
    while new is None and time.monotonic() < deadline:
        time.sleep(0.1)
        new = acquire(conn, "victim", "heir")
    assert new is not None and new > token
    assert time.monotonic() - killed_at <= 2.6


MID_COMMIT = textwrap.dedent("""
    import sys, time, psycopg
    c = psycopg.connect(sys.argv[1], autocommit=True)
    t = c.execute("SELECT m10_recovery.acquire_lock('frozen', 'paused', 2)").fetchone()[0]
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
    frozen_at = time.monotonic()
    try:
        assert acquire(conn, "frozen", "heir") is None  # its lease is still live
        new = None
        while new is None and time.monotonic() - frozen_at < 10:
            new = acquire(conn, "frozen", "heir")
        taken_after = time.monotonic() - frozen_at
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    out, _ = proc.communicate("\n", timeout=30)
    assert new is not None and new > token
    assert taken_after <= 4.5, taken_after  # TTL 2 s, not "whenever it wakes up"
    assert out.split()[-1] == "25P03"  # the server ended its transaction: nothing committed
    assert conn.execute("SELECT count(*) AS n FROM probe").fetchone()["n"] == 0


def test_busy_fenced_commit_past_expiry_keeps_the_row_but_nobody_hangs(
    conn: Conn, dsn: str, cli: Any
) -> None:
    """A fenced transaction still running a statement keeps its protection; contenders
    give up after 2 s instead of waiting for it."""
    conn.execute("SET statement_timeout = '15s'")  # a regression fails rather than hangs
    token = acquire(conn, "slow", "committer", ttl=1)
    busy = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
        import sys, psycopg
        with psycopg.connect(sys.argv[1]) as c:
            c.execute("SELECT m10_recovery.assert_lease('slow', 'committer', %s)",
                      (int(sys.argv[2]),))
            print("fenced", flush=True)
            c.execute("SELECT pg_sleep(10)")
        print("committed", flush=True)
    """),
            dsn,
            str(token),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert busy.stdout.readline().strip() == "fenced"
    time.sleep(1.2)  # the lease has lapsed; the commit is still running
    t0 = time.monotonic()
    assert acquire(conn, "slow", "heir") is None
    assert conn.execute("SELECT m10_recovery.reclaim_expired_locks() AS n").fetchone()["n"] == 0
    forced = cli("m10", "locks", "release", "slow", "--force")
    waited = time.monotonic() - t0
    assert forced.returncode == 75, forced.stderr
    assert "committing right now" in forced.stderr and "Traceback" not in forced.stderr
    assert waited < 8, waited  # two 2 s waits and a CLI start, not the 10 s commit
    assert busy.communicate(timeout=30)[0].strip() == "committed"
    assert acquire(conn, "slow", "heir") > token


ROW_HOLDER = textwrap.dedent("""
    import sys, psycopg
    dsn, name, holder, token, hold = sys.argv[1:6]
    with psycopg.connect(dsn) as c:   # one transaction, committed when the block ends
        c.execute("SELECT m10_recovery.assert_lease(%s, %s, %s)", (name, holder, int(token)))
        print("fenced", flush=True)
        c.execute("SELECT pg_sleep(%s)", (float(hold),))  # busy: keeps the row FOR SHARE
        released = c.execute("SELECT clock_timestamp() AS t").fetchone()[0]
    print(released.isoformat(), flush=True)
""")


def hold_row(dsn: str, name: str, holder: str, token: int, seconds: float) -> subprocess.Popen[str]:
    """A holder's fenced transaction keeping the lease row locked for `seconds`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", ROW_HOLDER, dsn, name, holder, str(token), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "fenced"
    return proc


def released_at(proc: subprocess.Popen[str]) -> datetime:
    """When the holder's transaction ended, by the database clock (read just before COMMIT)."""
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return datetime.fromisoformat(out.strip())


def test_takeover_after_waiting_for_the_row_is_stamped_after_the_wait(conn: Conn, dsn: str) -> None:
    """The old lease lapses while its holder's fenced transaction still has the row; the
    heir waits for that transaction, and its lease starts when it got the row, with its
    whole TTL."""
    conn.execute("SET statement_timeout = '15s'")  # a regression fails rather than hangs
    old = acquire(conn, "waited", "old", ttl=1)
    holder = hold_row(dsn, "waited", "old", old, 1.8)
    left = conn.execute(
        "SELECT extract(epoch FROM expires_at - clock_timestamp()) AS s "
        "FROM m10_recovery.distributed_locks WHERE lock_name = 'waited'"
    ).fetchone()["s"]
    time.sleep(float(left) + 0.1)  # lapsed, but the row is still locked for a while
    t0 = time.monotonic()
    new = acquire(conn, "waited", "heir", ttl=60)
    waited = time.monotonic() - t0
    released = released_at(holder)
    assert new is not None and new > old
    assert waited >= 0.2, waited  # it really queued behind the holder's transaction
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
    live = acquire(conn, "live", "a", ttl=5)
    holder = hold_row(dsn, "live", "a", live, 0.8)
    assert extend(conn, "live", "a", live, ttl=60) is True
    released = released_at(holder)
    row = conn.execute(
        "SELECT extended_at, expires_at FROM m10_recovery.distributed_locks "
        "WHERE lock_name = 'live'"
    ).fetchone()
    assert row["extended_at"] >= released, (row, released)
    assert row["expires_at"] - row["extended_at"] == timedelta(seconds=60)

    lapsing = acquire(conn, "lapsing", "a", ttl=1)
    holder = hold_row(dsn, "lapsing", "a", lapsing, 1.5)
    assert extend(conn, "lapsing", "a", lapsing, ttl=60) is False  # lapsed while it waited
    released_at(holder)
    assert acquire(conn, "lapsing", "b") is not None
