"""Helpers for the canary/rollback tests: a real HTTP endpoint on loopback and config files."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Endpoint:
    """An HTTP server in a thread; tests flip `status` and `delay` between canary runs."""

    status: int = 200
    delay: float = 0.0
    hits: int = 0
    server: ThreadingHTTPServer | None = field(default=None, repr=False)

    def start(self) -> Endpoint:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.hits += 1
                time.sleep(endpoint.delay)
                body = b"ok\n" if endpoint.status < 400 else b"broken\n"
                try:
                    self.send_response(endpoint.status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the canary gave up (timeout) and closed the socket

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/health"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    ep = Endpoint().start()
    yield ep
    ep.stop()


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(v)  # strings and lists of strings: JSON's syntax is valid TOML here


def toml(
    canary: dict[str, Any] | None = None,
    probes: list[dict[str, Any]] | None = None,
    rollback: dict[str, Any] | None = None,
) -> str:
    lines: list[str] = []
    if canary is not None or probes is not None:
        lines.append("[canary]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in (canary or {}).items()]
        for p in probes or []:
            lines.append("[[canary.probes]]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in p.items()]
    if rollback is not None:
        lines.append("[rollback]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in rollback.items()]
    return "\n".join(lines) + "\n"


def write_config(env: dict[str, str], path: Path, **sections: Any) -> Path:
    """Write a TOML config and point env's M10_CONFIG at it."""
    path.write_text(toml(**sections))
    env["M10_CONFIG"] = str(path)
    return path


def reports(env: dict[str, str]) -> Path:
    return Path(env["M10_STATE_DIR"]) / "canary" / "reports"


def latest(env: dict[str, str]) -> dict[str, Any]:
    return json.loads((reports(env) / "latest_report.json").read_text())


def summary(stdout: str) -> dict[str, Any]:
    """The runner's JSON summary line (the last line on stdout)."""
    return json.loads(stdout.strip().splitlines()[-1])


def task_summary(stdout: str) -> dict[str, Any]:
    return summary(stdout)["tasks"][0].get("summary", {})
