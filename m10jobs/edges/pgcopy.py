"""`COPY ... TO STDOUT` read straight off libpq (retention's archive batches).

psycopg's Copy waits once per row, which at a million rows costs the client more than
PostgreSQL's rendering, so this drives the connection's libpq handle itself.  Every
wait is a bounded poll (POLL_S) that looks at a stop event in between: the reader runs
in worker threads, which a signal never interrupts, so SIGTERM must reach it this way.
On a stop the query is cancelled and read to its end (the server answers a cancel at
once), so the connection is left idle for its transaction to roll back, and Stopped is
raised; a server that does not answer within CANCEL_WAIT_S is given up on.
"""

from __future__ import annotations

import contextlib
import select
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from m10jobs import stopping

if TYPE_CHECKING:
    import psycopg

POLL_S = 0.2
"""Longest wait on the socket before the stop event is looked at again."""
CANCEL_WAIT_S = 10.0
"""How long a cancelled query may take to end before the connection is given up."""


def copy_out(
    conn: psycopg.Connection[Any],
    sql: str,
    args: dict[str, Any],
    stop: threading.Event = stopping.STOP,
    poll_s: float = POLL_S,
) -> tuple[bytearray, int]:
    """The whole COPY stream of `sql` (with `args` bound client-side) and its row count.
    Stopped when `stop` is set while it waits (the query is cancelled first)."""
    from psycopg import ClientCursor

    pg = conn.pgconn
    pg.send_query(ClientCursor(conn).mogrify(sql, args).encode())
    buf = bytearray()  # grown in place: keeping a million row buffers to join costs 3x
    poll = select.poll()
    poll.register(pg.socket, select.POLLIN | select.POLLOUT)
    timeout_ms = int(poll_s * 1000)
    cancelled: list[float] = []  # when the cancel was sent

    def wait() -> None:
        if poll.poll(timeout_ms) or not stop.is_set():
            return
        if not cancelled:
            cancelled.append(time.monotonic())
            _cancel(pg)
        elif time.monotonic() - cancelled[0] > CANCEL_WAIT_S:
            raise _stopped()

    try:
        result = _read(pg, conn, buf, poll, wait)
    except Exception:
        if cancelled:  # the cancel's own error (QueryCanceled): the stop is the news
            raise _stopped() from None
        raise
    if cancelled:
        raise _stopped()
    return result


def _stopped() -> stopping.Stopped:
    return stopping.Stopped(stopping.signum() or signal.SIGTERM)


def _read(pg: Any, conn: Any, buf: bytearray, poll: Any, wait: Any) -> tuple[bytearray, int]:
    from psycopg import errors as e
    from psycopg import pq

    while pg.flush():  # a non-blocking connection: the query may not have gone out yet
        wait()
    poll.modify(pg.socket, select.POLLIN)
    res = None
    while True:  # the first result: COPY_OUT, or the error
        pg.consume_input()
        if not pg.is_busy():
            res = pg.get_result()
            break
        wait()
    if res is None:
        raise e.OperationalError(pg.get_error_message())
    if res.status != pq.ExecStatus.COPY_OUT:
        while pg.get_result() is not None:
            pass
        raise e.error_from_result(res, encoding=conn.info.encoding)
    get = pg.get_copy_data
    while True:
        nbytes, data = get(1)
        if nbytes > 0:
            buf += data
        elif nbytes == 0:
            wait()
            pg.consume_input()
        else:
            break
    res = pg.get_result()
    while pg.get_result() is not None:
        pass
    if res is None:
        raise e.OperationalError(pg.get_error_message())
    if res.status != pq.ExecStatus.COMMAND_OK:
        raise e.error_from_result(res, encoding=conn.info.encoding)
    return buf, res.command_tuples or 0


def _cancel(pg: Any) -> None:
    """Ask the server to cancel the running query (best effort: the connection is
    abandoned anyway, and its transaction rolls back when it closes)."""
    with contextlib.suppress(Exception):  # a failed cancel leaves the rollback on close
        pg.get_cancel().cancel()
