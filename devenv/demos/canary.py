"""Canary and rollback: a local HTTP endpoint passes, then fails; rollback acts exactly once."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devenv.demo import Demo

ORDER = 70


class _Endpoint(BaseHTTPRequestHandler):
    """GET /health: 200 while healthy, 503 once the demo "breaks the deploy"."""

    healthy = True

    def do_GET(self) -> None:
        status = 200 if type(self).healthy else 503
        body = b"ok\n" if status == 200 else b"broken deploy\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _config(url: str, rollback_log: Path) -> str:
    # The rollback command is an argv list (no shell of ours); sh -c is the command itself.
    # It sees only the environment given to it ([rollback.env]), never M10_* or secrets.
    return f"""
[canary]
target = "demo-api"

[[canary.probes]]
name = "api-health"
type = "http"
url = "{url}"
max_latency_ms = 500
timeout_s = 2
critical = true
weight = 2

[[canary.probes]]
name = "redis"
type = "redis"

[[canary.probes]]
name = "outbox-backlog"
type = "outbox_backlog"
max_pending = 100

[rollback]
command = [
  "sh", "-c", "echo rolled back after report $M10_CANARY_RUN_ID >> $DEMO_ROLLBACK_LOG",
]
timeout_s = 30
max_report_age_s = 600

[rollback.env]
DEMO_ROLLBACK_LOG = "{rollback_log}"
"""


def _show_report(d: Demo, state: Path) -> None:
    report = json.loads((state / "canary" / "reports" / "latest_report.json").read_text())
    d.show(
        "\n".join(
            [
                f"latest_report.json: run {report['run_id']} verdict={report['verdict']} "
                f"score={report['score']} ({report['reason']})",
                *(f"  {p['name']:15} {p['status']:8} {p['detail']}" for p in report["probes"]),
            ]
        )
    )


def run(d: Demo) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/health"
    state = Path(d.env["M10_STATE_DIR"])
    rollback_log = state / "rollback.log"
    with d.config_path.open("a") as f:
        f.write(_config(url, rollback_log))
    try:
        d.say(f"canary against a healthy endpoint ({url}): verdict pass, rollback does nothing")
        d.run("m10-canary")
        _show_report(d, state)
        d.run("m10-rollback")

        d.say("the deploy breaks (503): the critical probe fails, verdict fail")
        _Endpoint.healthy = False
        d.run("m10-canary")
        _show_report(d, state)
        d.run("m10-rollback", "--dry-run")
        d.say("rollback acts on the fresh failing report ...")
        d.run("m10-rollback")
        d.say("... and only once: a second pass on the same report does nothing")
        d.run("m10-rollback")
        d.show(f"{rollback_log.name}: {rollback_log.read_text().strip()}")
        d.say("the rollback ledger (PostgreSQL, cluster-wide) beside the report")
        d.run("m10", "canary", "status")

        d.say("a truncated report is bad input: exit 65, nothing done")
        latest = state / "canary" / "reports" / "latest_report.json"
        latest.write_bytes(latest.read_bytes()[:100])
        d.run("m10-rollback", expect=65)
        _Endpoint.healthy = True
        d.say("fixed: the next canary run writes a whole, passing report")
        d.run("m10-canary")
        _show_report(d, state)
        d.run("m10-rollback")
    finally:
        server.shutdown()
        server.server_close()
