"""Low-latency outbox: run with --linger (as the unit runs it), a pass keeps its lease
after draining and LISTENs for enqueue_outbox's notification up to
outbox.linger_seconds, publishing what arrives within milliseconds; it still ends (in
time), releases and exits, also on SIGTERM.  Without --linger (a hand run) it drains and
exits whatever linger_seconds says."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import redis

from m10jobs.jobs.outbox.process import LINGER_POLL_S
from tests.conftest import BIN
from tests.outbox_support import enqueue, write_config

SCRIPT = "m10-outbox-processor"


def _lease_held(conn: psycopg.Connection[Any]) -> bool:
    return (
        conn.execute(
            "SELECT count(*) AS n FROM m10_recovery.distributed_locks "
            "WHERE lock_name = 'm10:outbox_processor'"
        ).fetchone()["n"]
        == 1
    )


def _start(
    cfg: Path, env: dict[str, str], conn: psycopg.Connection[Any], r: redis.Redis, drained: int
) -> subprocess.Popen[str]:
    """Start a pass as the unit does (--linger); return once its first drain has put
    `drained` events in the stream (so it is lingering)."""
    proc = subprocess.Popen(
        [str(BIN / SCRIPT), "--config", str(cfg), "--linger"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    end = time.monotonic() + 30
    while not _lease_held(conn) or r.xlen("m10:outbox") < drained:
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()
        time.sleep(0.02)
    time.sleep(0.1)
    return proc


def test_events_enqueued_during_linger_reach_the_stream_before_the_pass_ends(
    conn: psycopg.Connection[Any], env: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    # long enough for the five events below even on a busy machine (the pass must
    # still be lingering when the last arrives); how it ends is checked after
    linger = 10.0
    cfg = write_config(tmp_path, f"[outbox]\nlinger_seconds = {linger}\n")
    enqueue(conn, 3, key_prefix="before")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    proc = _start(cfg, env, conn, r, drained=3)
    latencies = []
    last = r.xrevrange("m10:outbox", count=1)[0][0]
    for i in range(5):
        t0 = time.monotonic()
        [eid] = enqueue(conn, 1, key_prefix=f"during{i}")
        got = r.xread({"m10:outbox": last}, block=30_000, count=1)
        latencies.append(time.monotonic() - t0)
        assert got, f"event {eid} did not arrive while the pass lingered"
        last = got[0][1][0][0]
        assert int(got[0][1][0][1]["event_id"]) == eid
        assert proc.poll() is None, "the pass ended while the events were arriving"
        time.sleep(0.2)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    task = json.loads(out.strip().splitlines()[-1])["tasks"][0]
    assert task["summary"]["published"] == 8 and task["summary"]["wakeups"] >= 5
    # Woken by the notification, not by the next poll: the latency IS the subject.  A
    # poll-driven pass would publish LINGER_POLL_S/2 later on average, all five rarely
    # below that; a notified one takes milliseconds, so the bound leaves ample room.
    assert max(latencies) < LINGER_POLL_S / 2, latencies
    # it lingered its linger_seconds, then ended by itself (the bound only says it did
    # not keep going: a generous margin for a busy machine)
    assert linger - 0.2 < task["duration_s"] < linger + 10, task
    assert not _lease_held(conn)


def test_sigterm_during_linger_releases_the_lease_at_once(
    conn: psycopg.Connection[Any], env: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path, "[outbox]\nlinger_seconds = 60\n")
    enqueue(conn, 1)
    proc = _start(cfg, env, conn, redis.Redis.from_url(redis_url), drained=1)
    proc.send_signal(signal.SIGTERM)
    # it ends on the signal, not after its 60 s linger (the timeout is only a guard)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM, err  # ends by the signal (docs/contract.md)
    assert not _lease_held(conn)  # released, not left to lapse
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["tasks"][0]["summary"]["stopped_by_signal"] is True
    assert "Traceback" not in err
    token = conn.execute(
        "SELECT m10_recovery.acquire_lock('m10:outbox_processor', 'next', 60) AS t"
    ).fetchone()["t"]
    assert token is not None  # the next pass (any host) takes over at once


def test_a_pass_without_linger_drains_and_exits_even_with_linger_seconds_set(
    conn: psycopg.Connection[Any], env: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    """An operator's hand run (or `m10 run`, an acceptance check) must not sit on the
    lease for linger_seconds: only the unit's --linger lingers."""
    cfg = write_config(tmp_path, "[outbox]\nlinger_seconds = 60\n")
    enqueue(conn, 3)
    done = subprocess.run(
        [str(BIN / SCRIPT), "--config", str(cfg)],
        env=env,
        text=True,
        capture_output=True,
        timeout=45,  # a pass that lingered would take its 60 s
    )
    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout.strip().splitlines()[-1])["tasks"][0]
    assert task["summary"]["published"] == 3 and task["summary"]["wakeups"] == 0
    assert task["duration_s"] < 45, task  # it did not linger (60 s)
    assert redis.Redis.from_url(redis_url).xlen("m10:outbox") == 3
    assert not _lease_held(conn)
    enqueue(conn, 1, key_prefix="after")  # nobody listens: it waits for the next pass
    time.sleep(0.5)
    assert redis.Redis.from_url(redis_url).xlen("m10:outbox") == 3
