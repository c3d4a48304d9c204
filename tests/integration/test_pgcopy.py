"""The COPY reader (edges/pgcopy.py) runs in retention's worker threads, which no signal
interrupts: a stop must reach it through the stop event, cancel the query on the server
and leave the connection usable for its rollback."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from m10jobs.edges.pgcopy import copy_out
from m10jobs.stopping import Stopped


def test_reads_a_whole_binary_copy(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        data, n = copy_out(
            conn,
            "COPY (SELECT g FROM generate_series(1, %(n)s) g) TO STDOUT (FORMAT binary)",
            {"n": 1000},
            stop=threading.Event(),
        )
    assert n == 1000 and data.startswith(b"PGCOPY\n\xff\r\n\x00") and data.endswith(b"\xff\xff")


def test_an_error_is_the_servers(dsn: str) -> None:
    with psycopg.connect(dsn) as conn, pytest.raises(psycopg.errors.DivisionByZero):
        copy_out(conn, "COPY (SELECT 1 / 0) TO STDOUT (FORMAT binary)", {}, threading.Event())


def test_a_stop_cancels_a_waiting_copy(dsn: str) -> None:
    stop = threading.Event()
    seen: dict[str, Any] = {}
    with psycopg.connect(dsn) as conn:
        pid = conn.info.backend_pid

        def worker() -> None:  # a worker thread, as in retention: no signal reaches it
            try:
                with conn.transaction():
                    copy_out(
                        conn, "COPY (SELECT pg_sleep(600)) TO STDOUT (FORMAT binary)", {}, stop
                    )
            except BaseException as exc:
                seen["exc"] = exc

        t = threading.Thread(target=worker)
        t.start()
        with psycopg.connect(dsn, autocommit=True) as watch:
            for _ in range(600):  # until the query is running on the server
                row = watch.execute(
                    "SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone()
                if row and row[0] == "active" and "pg_sleep" in row[1]:
                    break
                threading.Event().wait(0.05)
            stop.set()
            t.join(60)  # pg_sleep(600): only a cancel ends it within this
            assert not t.is_alive(), "the reader did not honour the stop event"
            assert isinstance(seen.get("exc"), Stopped)
            state = watch.execute(
                "SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            assert state is not None and state[0] == "idle"  # cancelled and rolled back
        assert conn.execute("SELECT 1").fetchone() == (1,)  # still usable
