"""A lease never outlives its holder's sessions or its server (migration 100), straight
against the SQL functions.  A restart or promotion is simulated here by moving the row's
server stamp; tests/integration/test_pg_failover.py restarts and promotes real servers."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from m10jobs.edges.queries import query

Conn = psycopg.Connection[dict[str, Any]]


def session(dsn: str) -> Conn:
    return psycopg.connect(dsn, autocommit=True, row_factory=dict_row)


def close(conn: Conn, observer: Conn) -> None:
    """Close a session and wait until its backend has exited (that is asynchronous)."""
    pid = conn.info.backend_pid
    conn.close()
    deadline = time.monotonic() + 5
    while observer.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
        assert time.monotonic() < deadline, "the backend did not exit"
        time.sleep(0.02)


def acquire(conn: Conn, name: str, holder: str, bound: bool, ttl: int = 60) -> int | None:
    """The lease client's own query: bound = the lease ends with this session."""
    args = {"name": name, "holder": holder, "ttl": ttl, "session": "bound" if bound else ""}
    return conn.execute(query("acquire_lock"), args).fetchone()["token"]


def extend(conn: Conn, name: str, holder: str, token: int, bound: bool = True) -> bool:
    args = {
        "name": name,
        "holder": holder,
        "token": token,
        "ttl": 60,
        "session": "bound" if bound else "",
    }
    return conn.execute(query("extend_lock"), args).fetchone()["extended"]


def orphaned(conn: Conn, name: str) -> bool:
    rows = {r["lock_name"]: r for r in conn.execute(query("list_locks")).fetchall()}
    return bool(rows[name]["orphaned"])


def test_a_bound_lease_is_free_once_its_session_ended(conn: Conn, dsn: str) -> None:
    holder = session(dsn)
    token = acquire(holder, "job", "a:1:r", bound=True)
    assert token is not None
    assert acquire(conn, "job", "b:1:r", bound=True) is None  # live while the session is
    close(holder, conn)
    assert orphaned(conn, "job")
    assert conn.execute(query("lock_holder"), {"name": "job"}).fetchone() is None
    taken = acquire(conn, "job", "b:1:r", bound=True)
    assert taken is not None and taken > token


def test_an_unbound_lease_keeps_ttl_semantics(conn: Conn, dsn: str) -> None:
    """Transaction pooling, other layers' short sessions: a session ending says nothing."""
    holder = session(dsn)
    assert acquire(holder, "job", "a:1:r", bound=False) is not None
    close(holder, conn)
    assert not orphaned(conn, "job")
    assert acquire(conn, "job", "b:1:r", bound=True) is None


def test_the_heartbeat_session_keeps_it_alive(conn: Conn, dsn: str) -> None:
    """The client extends from its own connection: either session alive means alive, and
    a reconnected heartbeat re-stamps."""
    pass_conn, beat = session(dsn), session(dsn)
    token = acquire(pass_conn, "job", "a:1:r", bound=True)
    assert token is not None and extend(beat, "job", "a:1:r", token)
    close(pass_conn, conn)
    assert acquire(conn, "job", "b:1:r", bound=True) is None
    close(beat, conn)
    beat = session(dsn)  # reconnected before anyone took it: re-stamped, still ours
    assert extend(beat, "job", "a:1:r", token)
    assert acquire(conn, "job", "b:1:r", bound=True) is None
    close(beat, conn)
    assert acquire(conn, "job", "b:1:r", bound=True) is not None


@pytest.mark.parametrize(
    "stamp",
    [
        "server_started_at = server_started_at - interval '1 hour'",  # a restart
        "timeline = timeline + 1",  # a promotion (as seen from the new timeline's view)
    ],
)
def test_a_lease_from_before_a_restart_is_free_and_its_live_holder_is_fenced(
    conn: Conn, dsn: str, stamp: str
) -> None:
    """The holder (its sessions alive, unbound) is free to be taken once the server it
    stamped is gone; the old holder can then neither extend nor commit."""
    holder = session(dsn)
    token = acquire(holder, "job", "a:1:r", bound=False)
    assert token is not None
    conn.execute(f"UPDATE m10_recovery.distributed_locks SET {stamp}")
    assert orphaned(conn, "job")
    # the runner's busy probe agrees: nobody holds it
    held = conn.execute(query("lease_holders"), {"names": ["job"]}).fetchall()
    assert held == []
    taken = acquire(conn, "job", "b:1:r", bound=False)
    assert taken is not None and taken > token
    assert not extend(holder, "job", "a:1:r", token)
    with pytest.raises(psycopg.Error) as err, holder.transaction():
        holder.execute(query("assert_lease"), {"name": "job", "holder": "a:1:r", "token": token})
    assert err.value.sqlstate == "M10LL"


def test_reclaim_collects_orphaned_leases(conn: Conn, dsn: str) -> None:
    holder = session(dsn)
    acquire(holder, "gone", "a:1:r", bound=True)
    acquire(conn, "kept", "b:1:r", bound=True)
    close(holder, conn)
    assert conn.execute(query("reclaim_expired_locks")).fetchone()["reclaimed"] == 1
    names = [r["lock_name"] for r in conn.execute(query("list_locks")).fetchall()]
    assert names == ["kept"]


def test_tokens_are_never_below_the_timeline_floor(conn: Conn) -> None:
    """On timeline 1 (a fresh cluster) the floor is 0: tokens go on from the sequence."""
    timeline = conn.execute("SELECT m10_recovery.current_timeline() AS t").fetchone()["t"]
    token = acquire(conn, "job", "a:1:r", bound=False)
    assert token is not None and token > (timeline - 1) << 40
