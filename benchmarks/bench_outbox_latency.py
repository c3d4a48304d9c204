"""Enqueue -> stream latency under a steady 1,000 events/s, over at least three
consecutive passes started the way the shipped unit starts them, against the same
bench without linger.

With linger (the shipped unit, emulated): each pass runs `m10-outbox-processor
--linger` with linger_seconds = M10_BENCH_LINGER_S (default 115, the production
value) and is started again as soon as it exits 0 (Restart=on-success,
RestartSec=0), so the hand-over gap is one start-up.  Baseline: passes without
linger started by a timer every M10_BENCH_TICK_S (default 20 s; production's timer
is 60 s), skipping a tick while a pass still runs as systemd does.

Besides the percentiles it prints the share of events that waited > 100 ms and the
measured hand-over gaps: from a pass's exit (seen by the supervisor) to the next
pass's LISTEN (its listener connection's backend_start in pg_stat_activity, the
connection that LISTENs first thing).  With linger the producer starts once the first
pass listens (the chain runs in production; its first start-up is no hand-over), so
the window of PASSES lingers holds PASSES - 1 hand-overs; its share of events that
waited > 100 ms is what decides p99: each hand-over costs about a start-up plus the
catch-up of what arrived meanwhile, against 1 % of PASSES * linger_seconds.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import redis

if TYPE_CHECKING:
    from benchmarks.run import Bench

TICK_S = int(os.environ.get("M10_BENCH_TICK_S", "20"))
LINGER_S = float(os.environ.get("M10_BENCH_LINGER_S", "115"))
PASSES = 3
RATE = 1000  # events/s
STEP_S = 0.02  # one producer transaction every 20 ms (20 events)
LISTENER = "m10-outbox-processor:listen"  # the pass's LISTEN connection (application_name)


class Supervisor(threading.Thread):
    """Starts passes as systemd would: with linger, again as soon as one exits 0; without,
    at every tick unless the previous pass still runs.  Records each pass's start and exit
    (wall clock) and exit code."""

    def __init__(self, bench: Bench, env: dict[str, str], cfg: Path, linger: bool) -> None:
        super().__init__()
        self.argv = [
            str(bench.bin / "m10-outbox-processor"),
            "--config",
            str(cfg),
            *(["--linger"] if linger else []),
        ]
        self.env, self.linger = env, linger
        self.stop = threading.Event()
        self.starts: list[float] = []
        self.exits: list[tuple[float, int]] = []

    def _start(self) -> subprocess.Popen[bytes]:
        self.starts.append(time.time())
        return subprocess.Popen(
            self.argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def run(self) -> None:
        proc = self._start()  # the first pass (without linger: just after a tick)
        next_tick = (time.time() // TICK_S + 1) * TICK_S
        while True:
            code = proc.poll()
            if self.stop.is_set():  # the bench is over (`systemctl stop` for a lingerer)
                if code is None and self.linger:
                    proc.terminate()
                self.exits.append((time.time(), proc.wait()))
                return
            if self.linger:
                if code is not None:
                    self.exits.append((time.time(), code))
                    if code != 0:
                        return  # not restarted after a failure (nor after 75)
                    proc = self._start()  # Restart=on-success, RestartSec=0
                    continue
            elif time.time() >= next_tick:
                next_tick += TICK_S
                if code is not None:  # systemd skips the tick of an active unit
                    self.exits.append((time.time(), code))
                    proc = self._start()
            time.sleep(0.002)


def _listeners(dsn: str, stop: threading.Event) -> list[float]:
    """backend_start (wall clock) of every listener connection seen, polled every 0.5 s
    (each lives a whole linger)."""
    seen: dict[int, float] = {}
    with psycopg.connect(dsn, autocommit=True) as c:
        while not stop.wait(0.5):
            for pid, started in c.execute(
                "SELECT pid, backend_start FROM pg_stat_activity WHERE application_name = %s",
                (LISTENER,),
            ).fetchall():
                assert isinstance(started, datetime)
                seen.setdefault(pid, started.timestamp())
    return sorted(seen.values())


def _await_listener(dsn: str, timeout: float = 60) -> None:
    """Until a pass LISTENs (the first pass's start-up is no hand-over: it is not measured)."""
    end = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as c:
        while not c.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = %s", (LISTENER,)
        ).fetchone():
            assert time.monotonic() < end, "no pass ever listened"
            time.sleep(0.01)


def _measure(bench: Bench, linger: bool) -> dict[str, object]:
    dsn = bench.fresh_db()
    redis_url = bench.stack.redis.url
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.flushdb()
    cfg = Path(tempfile.mkdtemp()) / "m10jobs.toml"
    cfg.write_text(f"[outbox]\nlinger_seconds = {LINGER_S}\n")  # used only with --linger
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("M10_")},
        **bench.stack.env(),
        "M10_DATABASE_URL": dsn,
        "M10_METRICS_DIR": "",
    }
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}
    done = threading.Event()

    def consume() -> None:
        last = "0-0"
        while not done.is_set() or len(arrived) < len(sent):
            got = r.xread({"m10:outbox": last}, block=200, count=1000)
            now = time.monotonic()
            for _, items in got or ():
                for eid, fields in items:
                    arrived[fields["idempotency_key"]] = now
                    last = eid
            if done.is_set() and not got:
                break

    listeners: list[float] = []
    watching = threading.Event()
    watcher = threading.Thread(target=lambda: listeners.extend(_listeners(dsn, watching)))
    # Without linger, start just after a tick, as the timer would.
    if not linger:
        time.sleep(TICK_S - time.time() % TICK_S + 0.05)
    sup = Supervisor(bench, env, cfg, linger)
    consumer = threading.Thread(target=consume)
    watcher.start()
    sup.start()
    consumer.start()
    if linger:  # production's steady state: the chain is running, its pass listening
        _await_listener(dsn)
    window = PASSES * LINGER_S if linger else PASSES * TICK_S
    end = time.monotonic() + window
    with psycopg.connect(dsn, autocommit=True) as c:
        next_at = time.monotonic()
        n = 0
        while time.monotonic() < end:
            keys = [f"b{n + i}" for i in range(int(RATE * STEP_S))]
            c.execute(
                "SELECT m10_recovery.enqueue_outbox('bench.latency', '{}', 'order', "
                "k, k) FROM unnest(%s::text[]) AS k",
                (keys,),
            )
            t = time.monotonic()
            for k in keys:
                sent[k] = t
            n += len(keys)
            next_at += STEP_S
            time.sleep(max(0.0, next_at - time.monotonic()))
    deadline = time.monotonic() + TICK_S + 10
    while len(arrived) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.1)
    sup.stop.set()
    done.set()
    sup.join()
    consumer.join()
    watching.set()
    watcher.join()
    lat = [(arrived[k] - sent[k]) * 1000 for k in sent if k in arrived]
    assert len(lat) == len(sent), f"{len(sent) - len(lat)} events never arrived"
    codes = [code for _, code in sup.exits]
    assert all(code in (0, 75, -15) for code in codes), codes
    gaps = []
    if linger:  # each exit 0 but the last -> the next pass's LISTEN
        for (exited, code), nxt in zip(sup.exits, sup.starts[1:], strict=False):
            opened = [t for t in listeners if t >= nxt]
            if code == 0 and opened:
                gaps.append((opened[0] - exited) * 1000)
    return {"lat": lat, "passes": len(sup.starts), "gaps": gaps, "rate": len(sent) / window}


def _pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=1000)[int(p * 10) - 1]


def run(bench: Bench) -> None:
    results = {linger: _measure(bench, linger) for linger in (False, True)}
    for linger, res in results.items():
        lat = res["lat"]
        assert isinstance(lat, list)
        name = (
            f"linger {LINGER_S:g}s, restart on exit 0"
            if linger
            else f"no linger, timer every {TICK_S}s (baseline)"
        )
        slow = sum(1 for x in lat if x > 100) / len(lat)
        print(
            f"  {name}: {len(lat):,} events at {res['rate']:,.0f}/s (target {RATE}) over "
            f"{res['passes']} passes; {slow:.2%} waited > 100 ms",
            flush=True,
        )
    lat, base = results[True]["lat"], results[False]["lat"]
    assert isinstance(lat, list) and isinstance(base, list)
    bench.report(
        "enqueue->stream latency p50, linger",
        _pct(lat, 50),
        "ms",
        baseline=_pct(base, 50),
        baseline_name="no linger",
        goal="<= 10 ms",
    )
    bench.report(
        "enqueue->stream latency p99, linger",
        _pct(lat, 99),
        "ms",
        baseline=_pct(base, 99),
        baseline_name="no linger",
        goal="<= 100 ms",
    )
    gaps = results[True]["gaps"]
    assert isinstance(gaps, list)
    if gaps:
        bench.report("hand-over gap (exit -> next LISTEN), max", max(gaps), "ms")
    print(
        "  "
        + json.dumps(
            {
                "linger_s": LINGER_S,
                "tick_s": TICK_S,
                "gaps_ms": [round(g) for g in gaps],
                "p999_ms": round(_pct(lat, 99.9), 1),
                "max_ms": round(max(lat), 1),
            }
        ),
        flush=True,
    )
