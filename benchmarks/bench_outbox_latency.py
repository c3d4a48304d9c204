"""Enqueue -> stream latency under a steady 1,000 events/s, over at least three
consecutive passes started the way the timer starts them (at every tick, unless the
previous pass still runs: systemd does not start an active unit), with outbox
linger on versus the same bench without it.

The tick is M10_BENCH_TICK_S (default 20 s; production's timer is 60 s, run
`M10_BENCH_TICK_S=60 make bench BENCH=bench_outbox_latency` for its figure); the
linger ends 0.5 s before each tick, so the hand-over gap (that margin plus one
start-up) is a larger share of a compressed period than of a real minute: the
share of events that waited for a hand-over is printed beside the percentiles.

M10_BENCH_HANDOVER=restart emulates a unit that systemd restarts as soon as a pass
exits 0 (Restart=on-success, not what the shipped units do), each pass lingering
linger_seconds without aligning to the tick: the gap is then one start-up, without
the margin.  For comparison only.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import redis

if TYPE_CHECKING:
    from benchmarks.run import Bench

TICK_S = int(os.environ.get("M10_BENCH_TICK_S", "20"))
PASSES = 3
RATE = 1000  # events/s
STEP_S = 0.02  # one producer transaction every 20 ms (20 events)
RESTART = os.environ.get("M10_BENCH_HANDOVER", "timer") == "restart"


def _timer(bench: Bench, env: dict[str, str], cfg: Path, stop: threading.Event,
           codes: list[int], restart: bool) -> None:
    """Start a pass at every tick unless the previous one is still running (and, with
    restart, as soon as the previous one exited 0)."""
    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([str(bench.bin / "m10-outbox-processor"), "--config",
                                 str(cfg)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    proc = start()  # the first pass, just after a tick
    next_tick = (time.time() // TICK_S + 1) * TICK_S
    while not stop.is_set():
        now = time.time()
        due = now >= next_tick
        if not due and not (restart and proc.poll() == 0):
            stop.wait(min(0.005, next_tick - now) if restart else next_tick - now)
            continue
        if due:
            next_tick += TICK_S
        if proc.poll() is None:
            continue  # systemd skips the tick of an active unit
        codes.append(proc.returncode)
        proc = start()
    proc.wait()
    codes.append(proc.returncode)


def _measure(bench: Bench, linger: bool) -> tuple[list[float], int, list[float]]:
    dsn = bench.fresh_db()
    redis_url = bench.stack.redis.url
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.flushdb()
    cfg = Path(tempfile.mkdtemp()) / "m10jobs.toml"
    # restarted on exit, a pass need not end before a tick: it lingers linger_seconds
    cfg.write_text(f"[outbox]\nlinger_seconds = {TICK_S if linger else 0}\n"
                   f"linger_tick_seconds = {0 if linger and RESTART else TICK_S}\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("M10_")},
           **bench.stack.env(), "M10_DATABASE_URL": dsn, "M10_METRICS_DIR": ""}
    sent: dict[str, float] = {}
    sent_wall: dict[str, float] = {}
    arrived: dict[str, float] = {}
    stop = threading.Event()
    codes: list[int] = []

    def consume() -> None:
        last = "0-0"
        while not stop.is_set() or len(arrived) < len(sent):
            got = r.xread({"m10:outbox": last}, block=200, count=1000)
            now = time.monotonic()
            for _, items in got or ():
                for eid, fields in items:
                    arrived[fields["idempotency_key"]] = now
                    last = eid
            if stop.is_set() and not got:
                break

    # Start just after a tick, as the timer would; run PASSES full periods.
    time.sleep(TICK_S - time.time() % TICK_S + 0.05)
    timer = threading.Thread(target=_timer,
                             args=(bench, env, cfg, stop, codes, linger and RESTART))
    consumer = threading.Thread(target=consume)
    timer.start()
    consumer.start()
    end = time.monotonic() + PASSES * TICK_S
    n = 0
    with psycopg.connect(dsn, autocommit=True) as c:
        next_at = time.monotonic()
        while time.monotonic() < end:
            keys = [f"b{n + i}" for i in range(int(RATE * STEP_S))]
            c.execute("SELECT m10_recovery.enqueue_outbox('bench.latency', '{}', 'order', "
                      "k, k) FROM unnest(%s::text[]) AS k", (keys,))
            t, wall = time.monotonic(), time.time()
            for k in keys:
                sent[k] = t
                sent_wall[k] = wall
            n += len(keys)
            next_at += STEP_S
            time.sleep(max(0.0, next_at - time.monotonic()))
    deadline = time.monotonic() + TICK_S + 10
    while len(arrived) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    timer.join()
    consumer.join()
    lat = [(arrived[k] - sent[k]) * 1000 for k in sent if k in arrived]
    assert len(lat) == len(sent), f"{len(sent) - len(lat)} events never arrived"
    assert all(code in (0, 75) for code in codes), codes
    # events sent while a pass lingered (not within 1 s before / 3 s after a tick)
    phase = {k: (sent_wall[k] % TICK_S) for k in sent}
    steady = [(arrived[k] - sent[k]) * 1000 for k in sent if 3 < phase[k] < TICK_S - 1]
    return lat, len(codes), steady


def _pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=1000)[int(p * 10) - 1]


def run(bench: Bench) -> None:
    results = {}
    for linger in (False, True):
        lat, passes, slow = _measure(bench, linger)
        results[linger] = (lat, passes, slow)
    base = results[False][0]
    for linger, (lat, passes, _) in results.items():
        name = ("with linger" + (", restart on exit (emulated)" if RESTART else "")
                if linger else "no linger (baseline)")
        slow = sum(1 for x in lat if x > 100) / len(lat)
        print(f"  {name}: {len(lat):,} events at {RATE}/s over {passes} passes, tick {TICK_S}s; "
              f"{slow:.1%} waited > 100 ms (hand-overs)", flush=True)
    lat, _, steady = results[True]
    bench.report("enqueue->stream latency p50, linger", _pct(lat, 50), "ms",
                 baseline=_pct(base, 50), baseline_name="no linger", goal="<= 10 ms")
    bench.report("enqueue->stream latency p99, linger", _pct(lat, 99), "ms",
                 baseline=_pct(base, 99), baseline_name="no linger", goal="<= 100 ms")
    bench.report("  p99 of events sent while a pass lingered", _pct(steady, 99), "ms")
    print("  " + json.dumps({"tick_s": TICK_S, "p999_ms": round(_pct(lat, 99.9), 1),
                             "max_ms": round(max(lat), 1)}), flush=True)
