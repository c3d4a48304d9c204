"""Leases on m10_recovery.distributed_locks, reached only through its SQL functions.

    with Lease(dsn, conn, "m10:canary", holder, ttl) as lease:   # LockBusy if held
        ...; lease.check(); ...; lease.fence(cur)  # inside the committing txn

While held, a heartbeat thread on its own connection extends the lease every
TTL/3.  If an extension is refused (taken over, force-released) or keeps
failing until the lease would have lapsed, the lease is marked lost and the
main thread is interrupted: the pass stops, and the runner exits 1 saying so.
Fenced writes (assert_lease in the same transaction) make a lapsed holder's
commit fail even if it never notices.

A lease never outlives an outage (migration 100): the row records the server it
was taken on and, unless the connection is transaction-pooled (`bound=False`),
the acquiring and heartbeat sessions; a restart, a promotion or the end of
those sessions frees it at once.  The heartbeat re-stamps on every extension,
so a holder that reconnects keeps its lease unless someone took it first.  The
release retries across reconnects for a bounded time (RELEASE_RETRY_S).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import psycopg

from m10jobs import stopping
from m10jobs.edges import conninfo, db
from m10jobs.edges.queries import one, query
from m10jobs.errors import LeaseLost, LockBusy, M10Error

# A holder may leave a transaction idle for its lease TTL, never less than this (tests
# run with 1-2 s leases; an upload inside a transaction can take a few seconds).
IDLE_TRANSACTION_FLOOR_S = 5
# How long a release keeps trying to reach the database (a restart takes ~1 s, a
# promotion a few): giving the lease back spares the next run a wait, nothing more --
# a restarted or promoted server frees the lease by itself.
RELEASE_RETRY_S = 10.0
RELEASE_RETRY_PAUSE_S = 0.5


class StillHeld(LockBusy):
    """A lease this pass depends on stayed held by another holder while we waited:
    skipped, nothing done (exit 75)."""

    def __init__(self, name: str, holder: dict[str, Any], waited_s: float, why: str) -> None:
        M10Error.__init__(
            self,
            f"{why}, and lock {name} is still held by "
            f"{holder['holder_id']} after waiting {waited_s:.0f}s; "
            "skipped, nothing done (the next run retries)",
        )
        self.name, self.holder = name, holder


def live_holder(conn: psycopg.Connection[Any], name: str) -> dict[str, Any] | None:
    """Who holds lease `name` right now (None: free or lapsed)."""
    row = conn.execute(query("lock_holder"), {"name": name}).fetchone()
    return row if row is not None and row["expires_in_s"] > 0 else None


def wait_until_free(
    conn: psycopg.Connection[Any],
    name: str,
    timeout_s: float,
    check: Callable[[], None] | None = None,
    poll_s: float = 0.5,
) -> dict[str, Any] | None:
    """Wait (bounded) for another holder of lease `name` to let go: ordering that systemd
    enforces with After= on one host, across hosts.  None once free; else the holder
    still there after timeout_s.  `check` (the pass's lease check) runs every poll."""
    deadline = time.monotonic() + timeout_s
    while (holder := live_holder(conn, name)) is not None:
        if time.monotonic() >= deadline:
            return holder
        if check is not None:
            check()
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
    return None


def holder_id(run_id: str, host: str | None = None) -> str:
    return f"{host or socket.gethostname()}:{os.getpid()}:{run_id}"


@dataclass
class Lease:
    dsn: str
    conn: psycopg.Connection[Any]
    name: str
    holder: str
    ttl: int
    log: logging.Logger | None = None
    token: int | None = None
    bound: bool = field(default_factory=lambda: not conninfo.pooled())
    """The lease ends with this process's sessions.  False behind a transaction-pooling
    PgBouncer (database_pooling), where a server session outlives its client: TTL
    semantics, plus the restart/promotion rule."""

    def __post_init__(self) -> None:
        self.lost = threading.Event()
        self.lost_reason = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._main = threading.get_ident()

    # -- lifecycle ---------------------------------------------------------
    def acquire(self) -> int:
        args = {**self._args(), "token": None}
        with db.translated(self.dsn):
            token = one(self.conn.execute(query("acquire_lock"), args))["token"]
            if token is None:
                raise LockBusy(self.name, self.conn.execute(query("lock_holder"), args).fetchone())
        self.token = token
        return token

    def release(self) -> bool:
        """Give the lease back; False when it had already lapsed or been taken.

        If the pass's connection died, the release goes over fresh ones, retried for up
        to RELEASE_RETRY_S (the server may be restarting or being promoted), so the next
        run does not wait behind our own dead lease."""
        self._stop_heartbeat()
        if self.token is None:
            return False
        token = self.token
        try:
            with db.translated(self.dsn):
                try:
                    released = self._release_on(self.conn)
                except psycopg.Error as exc:
                    if not db.is_connection_error(exc):
                        raise
                    released = self._release_reconnecting()
        finally:
            self.token = None
        if not released and not self.lost.is_set():
            self._mark_lost(f"lease {self.name} (token {token}) had lapsed before release")
        return released

    def _release_reconnecting(self) -> bool:
        """release_lock over fresh connections until one answers or RELEASE_RETRY_S
        passed (then the last failure propagates: 69).  A stop signal ends the wait."""
        deadline = time.monotonic() + min(RELEASE_RETRY_S, max(self.ttl, 1))
        while True:
            try:
                with db.connect(self.dsn, app=f"m10jobs-lease:{self.name}") as conn:
                    return self._release_on(conn)
            except (psycopg.Error, M10Error) as exc:
                if isinstance(exc, psycopg.Error) and not db.is_connection_error(exc):
                    raise
                if time.monotonic() >= deadline or stopping.STOP.is_set():
                    raise
                if self.log:
                    self.log.warning("could not release lease %s yet, retrying: %s", self.name, exc)
                stopping.STOP.wait(RELEASE_RETRY_PAUSE_S)

    def _release_on(self, conn: psycopg.Connection[Any]) -> bool:
        if conn.closed:
            raise psycopg.OperationalError("connection closed")
        return bool(one(conn.execute(query("release_lock"), self._args()))["released"])

    def __enter__(self) -> Lease:
        self.acquire()
        self._bound_idle_transactions()
        self._start_heartbeat()
        return self

    def _bound_idle_transactions(self) -> None:
        """A holder frozen inside a transaction must not keep its row locks past its
        lease: whoever takes over would wait on them forever.  The server ends such a
        transaction (25P03); assert_lease tightens this for fenced ones.  Not behind a
        transaction-pooling PgBouncer, where the setting would stay with a pooled server
        session (set PgBouncer's own idle_transaction_timeout there)."""
        if conninfo.transaction_pooled():
            return
        ms = max(self.ttl, IDLE_TRANSACTION_FLOOR_S) * 1000
        with db.translated(self.dsn):
            self.conn.execute(query("bound_idle_transactions"), {"ms": ms})

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        released = self.release()
        if not released and et is None:
            self.check()

    # -- while held --------------------------------------------------------
    def check(self) -> None:
        """Raise LeaseLost when the lease is gone; call it at safe points of a pass."""
        if self.lost.is_set():
            raise LeaseLost(
                f"{self.lost_reason}; the pass stopped, its uncommitted work was discarded"
            )

    def confirm(self) -> bool:
        """After a pass failed: is the lease still ours?  The heartbeat may not have
        noticed yet (a paused process wakes up with every thread at once).  Asked over a
        fresh connection, since the pass's own may be what failed; True when the database
        cannot tell."""
        if self.lost.is_set():
            return False
        if self.token is None:
            return True
        try:
            with db.connect(self.dsn, app=f"m10jobs-lease:{self.name}") as conn:
                held = one(conn.execute(query("lease_held"), self._args()))["held"]
        except (psycopg.Error, M10Error):
            return True
        if not held:
            self._mark_lost(
                f"lease {self.name} (token {self.token}) lapsed or was taken over "
                "while the pass ran"
            )
        return bool(held)

    def fence(self, cur: psycopg.Cursor[Any]) -> None:
        """Inside the transaction that commits lease-protected work: fail unless still ours."""
        self.check()
        cur.execute(query("assert_lease"), self._args())

    def _args(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "holder": self.holder,
            "token": self.token,
            "ttl": self.ttl,
            "session": "bound" if self.bound else "",
        }

    # -- heartbeat ---------------------------------------------------------
    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name=f"lease:{self.name}", daemon=True)
        self._thread.start()

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def _beat(self) -> None:
        interval = max(self.ttl / 3, 0.2)
        last_ok = time.monotonic()
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.wait(interval):
            sent = time.monotonic()  # the new expiry counts from before the request
            try:
                if conn is None or conn.closed:
                    conn = db.connect(self.dsn, app=f"m10jobs-lease:{self.name}")
                extended = one(conn.execute(query("extend_lock"), self._args()))["extended"]
            except Exception as exc:  # keep trying until the lease would have lapsed
                if conn is not None:
                    conn.close()
                    conn = None
                if time.monotonic() - last_ok < self.ttl:
                    if self.log:
                        self.log.warning("could not extend lease %s, retrying: %s", self.name, exc)
                    continue
                self._mark_lost(f"lease {self.name} could not be extended for {self.ttl}s ({exc})")
                break
            if not extended:
                self._mark_lost(
                    f"lease {self.name} (token {self.token}) was taken over or force-released"
                )
                break
            last_ok = sent
            if self.log:
                self.log.debug("extended lease %s by %ss", self.name, self.ttl)
        if conn is not None:
            conn.close()

    def _mark_lost(self, reason: str) -> None:
        self.lost_reason = reason
        self.lost.set()
        if self.log:
            self.log.error("%s", reason)
        if threading.get_ident() != self._main and not self._stop.is_set():
            stopping.interrupt()
