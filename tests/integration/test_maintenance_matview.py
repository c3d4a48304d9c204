"""Materialized-view refresh under matview_<view> leases, with readers querying meanwhile."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.maintenance_support import summary, write_config

VIEWS = """
CREATE TABLE public.src (id int PRIMARY KEY, v int);
INSERT INTO public.src SELECT g, g FROM generate_series(1, 1000) g;
-- pg_sleep makes the refresh take ~1.5 s, so readers overlap it
CREATE MATERIALIZED VIEW public.totals AS
  SELECT s.id, s.v FROM public.src s, (SELECT pg_sleep(1.5)) AS slow;
CREATE UNIQUE INDEX totals_id ON public.totals (id);
CREATE MATERIALIZED VIEW public.plain AS SELECT count(*) AS n FROM public.src;
"""


def test_concurrent_refresh_keeps_readers_going_and_min_interval(
    cli: Any, conn: psycopg.Connection[Any], dsn: str, tmp_path: Path
) -> None:
    conn.execute(VIEWS)
    conn.execute("INSERT INTO public.src SELECT g, g FROM generate_series(1001, 1500) g")
    cfg = write_config(
        tmp_path,
        '[matviews]\nviews = ["public.totals", "plain"]\nmin_interval_seconds = 3600\n',
        base="",
    )
    latencies: list[float] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                while not stop.is_set():
                    t0 = time.monotonic()
                    c.execute("SELECT count(*) FROM public.totals").fetchone()
                    latencies.append(time.monotonic() - t0)
                    time.sleep(0.02)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    try:
        proc = cli("m10", "run", "matview_refresh", "--config", str(cfg))
    finally:
        stop.set()
        t.join()
    assert proc.returncode == 0, proc.stderr
    tasks = {x["lock"]: x for x in summary(proc)["tasks"]}
    assert tasks["matview_public.totals"]["summary"]["concurrently"] is True
    assert tasks["matview_public.totals"]["summary"]["refreshed"] is True
    assert tasks["matview_plain"]["summary"]["concurrently"] is False
    assert "no unique index" in proc.stderr
    assert not errors and len(latencies) > 20 and max(latencies) < 0.5, max(latencies)
    assert conn.execute("SELECT count(*) AS n FROM public.totals").fetchone()["n"] == 1500
    rows = conn.execute(
        "SELECT view_name, duration_ms, was_concurrent FROM "
        "m10_recovery.matview_refreshes ORDER BY view_name"
    ).fetchall()
    assert [r["view_name"] for r in rows] == ["plain", "public.totals"]
    assert rows[1]["duration_ms"] >= 1500 and rows[1]["was_concurrent"]

    conn.execute("INSERT INTO public.src VALUES (5000, 1)")
    again = cli("m10", "run", "matview_refresh", "--config", str(cfg))
    assert again.returncode == 0
    assert all(x["summary"]["refreshed"] is False for x in summary(again)["tasks"])
    assert conn.execute("SELECT count(*) AS n FROM public.totals").fetchone()["n"] == 1500


def test_view_lease_held_elsewhere_and_missing_view(
    cli: Any, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    conn.execute(VIEWS.replace("pg_sleep(1.5)", "pg_sleep(0)"))
    conn.execute("SELECT m10_recovery.acquire_lock('matview_plain', 'other-host', 60)")
    cfg = write_config(
        tmp_path, '[matviews]\nviews = ["plain", "public.totals", "nope"]\n', base=""
    )
    proc = cli("m10", "run", "matview_refresh", "--config", str(cfg))
    status = {x["lock"]: x["status"] for x in summary(proc)["tasks"]}
    assert status == {
        "matview_plain": "skipped",
        "matview_public.totals": "ok",
        "matview_nope": "failed",
    }
    assert proc.returncode == 1
    assert "not a materialized view" in proc.stderr and "Traceback" not in proc.stderr
