"""Ping hooks (m10jobs.hooks) against a real HTTP server on 127.0.0.1: which pings a
run sends and with what body, and that a dead endpoint changes nothing in the job's
outcome and costs at most hooks.timeout_s."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from m10jobs.jobs.canary.report import latest_path

TOKEN = "0b3c9d1e-hc-token-7f"


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.pings: list[tuple[str, str]] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        self.server.pings.append((self.path, body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Recorder]:
    srv = Recorder()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _config(tmp_path: Path, urls: dict[str, str], extra: str = "", timeout: float = 5) -> str:
    lines = "\n".join(f'"{k}" = "{v}"' for k, v in urls.items())
    path = tmp_path / "m10jobs.toml"
    path.write_text(f"{extra}\n[hooks]\ntimeout_s = {timeout}\n[hooks.ping_urls]\n{lines}\n")
    return str(path)


def _run(cli: Any, env: dict[str, str], config: str) -> tuple[Any, float]:
    t0 = time.monotonic()
    proc = cli("m10-rollback", env={**env, "M10_CONFIG": config})
    return proc, time.monotonic() - t0


def test_success_pings_start_then_the_plain_url_with_the_figures(
    cli: Any, env: dict[str, str], tmp_path: Path, server: Recorder
) -> None:
    config = _config(tmp_path, {"*": f"{server.base}/{TOKEN}/{{job}}?create=1"})
    proc, _ = _run(cli, env, config)
    assert proc.returncode == 0, proc.stderr
    paths = [p for p, _ in server.pings]
    assert paths == [
        f"/{TOKEN}/m10-rollback/start?create=1",
        f"/{TOKEN}/m10-rollback?create=1",
    ]
    assert server.pings[0][1] == ""
    assert server.pings[1][1].startswith("m10-rollback: decision=unconfigured")
    assert TOKEN not in proc.stdout + proc.stderr


def test_failure_pings_fail_with_the_one_line_error(
    cli: Any, env: dict[str, str], tmp_path: Path, server: Recorder
) -> None:
    report = latest_path(Path(env["M10_STATE_DIR"]))
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text('{"truncated": ')
    config = _config(
        tmp_path,
        {"m10-rollback": f"{server.base}/{TOKEN}", "*": f"{server.base}/other"},
        extra='[rollback]\ncommand = ["true"]',
    )
    proc, _ = _run(cli, env, config)
    assert proc.returncode == 65, proc.stderr
    assert [p for p, _ in server.pings] == [f"/{TOKEN}/start", f"/{TOKEN}/fail"]
    body = server.pings[1][1]
    assert body.startswith("exit 65: canary report ") and "not valid JSON" in body
    assert "\n" not in body


def test_a_run_that_fails_before_any_lease_pings_fail_only(
    cli: Any, env: dict[str, str], tmp_path: Path, server: Recorder
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = {**env, "M10_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{port}/x?connect_timeout=2"}
    config = _config(tmp_path, {"m10-rollback": f"{server.base}/{TOKEN}"})
    proc, _ = _run(cli, down, config)
    assert proc.returncode == 69, proc.stderr
    assert [p for p, _ in server.pings] == [f"/{TOKEN}/fail"]
    assert server.pings[0][1].startswith("exit 69: ")


def test_dry_run_and_jobs_without_a_url_ping_nothing(
    cli: Any, env: dict[str, str], tmp_path: Path, server: Recorder
) -> None:
    config = _config(tmp_path, {"m10-canary": f"{server.base}/{TOKEN}"})
    assert _run(cli, env, config)[0].returncode == 0
    proc = cli("m10-rollback", "--dry-run", env={**env, "M10_CONFIG": config})
    assert proc.returncode == 0, proc.stderr
    assert server.pings == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent() -> Iterator[str]:
    """An endpoint that accepts connections and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        s.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(s.accept()[0])

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{s.getsockname()[1]}/{TOKEN}"
    stop.set()
    t.join()
    for c in held:
        c.close()
    s.close()


@pytest.mark.parametrize("dead", ["closed", "silent"])
def test_a_dead_endpoint_changes_nothing_and_costs_at_most_the_timeout(
    cli: Any, env: dict[str, str], tmp_path: Path, silent: str, dead: str
) -> None:
    timeout = 1.5
    url = silent if dead == "silent" else f"http://127.0.0.1:{_closed_port()}/{TOKEN}"
    base_proc, base = _run(cli, env, _config(tmp_path, {"m10-canary": url}))
    assert base_proc.returncode == 0
    proc, took = _run(cli, env, _config(tmp_path, {"m10-rollback": url}, timeout=timeout))
    assert proc.returncode == 0, proc.stderr
    assert '"exit_code": 0' in proc.stdout
    assert took < base + timeout + 1.0, (took, base)
    assert "ping hook" in proc.stderr  # said, as a warning
    assert TOKEN not in proc.stdout + proc.stderr
