"""Canary/rollback: what a pass costs beyond the probes themselves.

Baselines measured in the same run: a bare urllib GET of the same loopback
endpoint (what one http probe must cost at least), and `m10-canary --help`
(process start-up, the floor of any one-shot pass).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from benchmarks.run import Bench

REPS = 5
PROBES = 20


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args: Any) -> None:
        pass


def _median_ms(fn: Any, reps: int = REPS) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def run(bench: Bench) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/health"
    work = Path(tempfile.mkdtemp(prefix="bench-canary-"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("M10_")},
        **bench.stack.env(),
        "M10_DATABASE_URL": bench.fresh_db(),
        "M10_STATE_DIR": str(work / "state"),
    }
    env.pop("M10_METRICS_DIR", None)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def configure(n: int, verdict_fail: bool = False) -> None:
        probes = "".join(
            f'\n[[canary.probes]]\nname = "api{i}"\ntype = "http"\nurl = "{url}"\n'
            f"expect_status = {500 if verdict_fail else 200}\ncritical = true\n"
            for i in range(n)
        )
        (work / "c.toml").write_text(f'[canary]\n{probes}\n[rollback]\ncommand = ["true"]\n')
        env["M10_CONFIG"] = str(work / "c.toml")

    def script(*args: str) -> None:
        proc = subprocess.run(
            [str(bench.bin / args[0]), *args[1:]],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            raise SystemExit(f"bench_canary: {args} exited {proc.returncode}: {proc.stderr[-500:]}")

    try:
        get = _median_ms(lambda: opener.open(url, timeout=5).read())
        startup = _median_ms(lambda: script("m10-canary", "--help"))
        configure(1)
        one = _median_ms(lambda: script("m10-canary"))
        configure(PROBES)
        many = _median_ms(lambda: script("m10-canary"))
        per_probe = (many - one) / (PROBES - 1)
        noop = _median_ms(lambda: script("m10-rollback"))
        report = json.loads((work / "state/canary/reports/latest_report.json").read_text())
        assert report["verdict"] == "pass"
        bench.report("bare urllib GET (loopback)", get, "ms")
        bench.report("process start-up (m10-canary --help)", startup, "ms")
        bench.report(
            "m10-canary, 1 http probe, wall", one, "ms", baseline=startup, baseline_name="start-up"
        )
        bench.report(
            f"m10-canary, {PROBES} http probes, wall",
            many,
            "ms",
            baseline=one,
            baseline_name="1 probe",
        )
        bench.report(
            "  cost per extra http probe", per_probe, "ms", baseline=get, baseline_name="bare GET"
        )
        bench.report(
            "m10-rollback on a passing report, wall",
            noop,
            "ms",
            baseline=startup,
            baseline_name="start-up",
            goal="< 1 s",
        )
    finally:
        server.shutdown()
        server.server_close()
