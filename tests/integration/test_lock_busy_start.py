"""A pass whose every lease is held elsewhere (most timer starts on a second host) is
answered by one libpq query before the driver is imported (edges.leaseprobe): it must
report exactly what the lease path reports, load no psycopg, and see only live leases."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from m10jobs.edges.lease import live_holder
from m10jobs.edges.leaseprobe import live_holders
from tests.lease_support import expire_lease
from tests.maintenance_support import summary

HOST = socket.gethostname()  # the env fixture sets no M10_HOSTNAME
LEASES = ("reclaim_gc", "dl_reconcile", "retention_cleanup", f"retention_cleanup@{HOST}")
DRIVER_PATH = (
    "import m10jobs.edges.leaseprobe as probe\n"
    "probe.live_holders = lambda *a, **k: None  # as if libpq could not be asked\n"
)


def _run(env: dict[str, str], tmp_path: Path, patch: str = "") -> tuple[Any, set[str]]:
    """m10-maintenance in a fresh interpreter; its process and the modules it loaded."""
    out = tmp_path / "modules.json"
    code = (
        f"import json, sys\n{patch}"
        "from m10jobs.cli.entry import m10_maintenance\n"
        "try:\n    m10_maintenance([])\nexcept SystemExit as exc:\n    code = exc.code\n"
        f"with open({str(out)!r}, 'w') as f:\n    json.dump(sorted(sys.modules), f)\n"
        "raise SystemExit(code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    return proc, set(json.loads(out.read_text()))


def _numbers(text: str) -> str:
    return re.sub(r"\d+(\.\d+)?", "N", text)


def _report(proc: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Summary tasks and log lines with what differs between two runs (ids, ages) masked."""
    tasks = [
        {**t, "duration_s": 0, "error": _numbers(t.get("error", ""))}
        for t in summary(proc)["tasks"]
    ]
    logs = [
        {
            k: _numbers(v) if k == "message" else v
            for k, v in json.loads(line).items()
            if k not in ("time", "run_id")
        }
        for line in proc.stderr.splitlines()
    ]
    return tasks, logs


def test_every_lease_held_elsewhere_is_reported_without_the_driver(
    env: dict[str, str], conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    for lock in LEASES:
        conn.execute("SELECT m10_recovery.acquire_lock(%s, 'other-host:1:x', 120)", (lock,))
    fast, loaded = _run(env, tmp_path)
    assert fast.returncode == 75, fast.stderr
    assert not loaded & {"psycopg", "psycopg_binary", "redis", "boto3", "m10jobs.edges.lease"}
    slow, loaded = _run(env, tmp_path, DRIVER_PATH)
    assert slow.returncode == 75, slow.stderr
    assert "psycopg" in loaded
    tasks, logs = _report(fast)
    assert {t["status"] for t in tasks} == {"skipped"} and len(tasks) == len(logs) == 6
    assert (
        "lock dl_reconcile is held by other-host:N:x (token N) for Ns, expires in Ns; "
        "skipped, nothing done" in {t["error"] for t in tasks}
    )
    assert (tasks, logs) == _report(slow)
    assert (Path(env["M10_METRICS_DIR"]) / "m10_maintenance.prom").exists()


def test_the_probe_sees_live_leases_only(dsn: str, conn: psycopg.Connection[Any]) -> None:
    odd = 'we"ird\\name@h'  # quoted in the text[] literal
    held = {
        name: conn.execute(
            "SELECT m10_recovery.acquire_lock(%s, 'other:1:x', 120) AS t", (name,)
        ).fetchone()["t"]
        for name in ("a", odd)
    }
    conn.execute("SELECT m10_recovery.acquire_lock('lapsed', 'other:1:x', 120)")
    expire_lease(conn, "lapsed")
    found = live_holders(dsn, ["a", odd, "lapsed", "never"], app="test")
    assert found is not None and set(found) == {"a", odd}
    for name, token in held.items():
        row = live_holder(conn, name)
        assert row is not None and found[name].keys() == row.keys()
        assert found[name]["holder_id"] == "other:1:x" and found[name]["fencing_token"] == token
        assert 0 <= found[name]["age_s"] < 60 and 60 < found[name]["expires_in_s"] <= 120


def test_the_probe_answers_none_where_the_driver_path_must_speak(dsn: str) -> None:
    # the runner then connects as it always did, and reports the problem (78 or 69)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    for bad in (
        "not a dsn",
        "postgresql://u:p@ss@127.0.0.1/db",
        "postgresql://127.0.0.1:0/db",
        f"postgresql://postgres@127.0.0.1:{closed}/db",
        dsn + "?sslmode=sometimes",
    ):
        assert live_holders(bad, ["a"], app="test") is None, bad
