"""A run whose every lease is cluster-wide and held by another host (most timer starts on
a second host) is answered by one libpq query before the driver is imported
(edges.leaseprobe): it must report exactly what the lease path reports, load no psycopg,
and see only live leases.  A run with a host-local lease (this host's own, which no other
host takes) never asks the probe."""

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
MAINTENANCE = ("reclaim_gc", "dl_reconcile", "retention_cleanup")
"""m10-maintenance's cluster-wide leases: another host holds them; retention_files's
lease, retention_cleanup@<this host>, is this host's own."""
DRIVER_PATH = (
    "import m10jobs.edges.leaseprobe as probe\n"
    "probe.live_holders = lambda *a, **k: None  # as if libpq could not be asked\n"
)


def _run(
    env: dict[str, str], tmp_path: Path, patch: str = "", script: str = "m10-outbox-processor"
) -> tuple[Any, set[str]]:
    """`script` in a fresh interpreter; its process and the modules it loaded."""
    out = tmp_path / "modules.json"
    attr = script.replace("-", "_")
    code = (
        f"import json, sys\n{patch}"
        f"from m10jobs.cli.entry import {attr}\n"
        f"try:\n    {attr}([])\nexcept SystemExit as exc:\n    code = exc.code\n"
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
    # the outbox processor: one cluster-wide lease, which another host's chain holds
    conn.execute("SELECT m10_recovery.acquire_lock('m10:outbox_processor', 'other-host:1:x', 120)")
    fast, loaded = _run(env, tmp_path)
    assert fast.returncode == 75, fast.stderr
    assert not loaded & {"psycopg", "psycopg_binary", "redis", "boto3", "m10jobs.edges.lease"}
    slow, loaded = _run(env, tmp_path, DRIVER_PATH)
    assert slow.returncode == 75, slow.stderr
    assert "psycopg" in loaded
    tasks, logs = _report(fast)
    assert {t["status"] for t in tasks} == {"skipped"} and len(tasks) == len(logs) == 1
    assert tasks[0]["error"] == (
        "lock mN:outbox_processor is held by other-host:N:x (token N) for Ns, expires in Ns; "
        "skipped, nothing done"
    )
    assert (tasks, logs) == _report(slow)
    assert (Path(env["M10_METRICS_DIR"]) / "m10_outbox_processor.prom").exists()


def test_a_run_with_a_host_local_lease_never_asks_the_probe(
    env: dict[str, str], conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # another host holds m10-maintenance's cluster-wide leases; this host's own file
    # policies (retention_cleanup@<this host>) are free, as they always are at a timer start
    for lock in MAINTENANCE:
        conn.execute("SELECT m10_recovery.acquire_lock(%s, 'other-host:1:x', 120)", (lock,))
    proc, loaded = _run(env, tmp_path, script="m10-maintenance")
    assert proc.returncode == 0, proc.stderr
    assert "m10jobs.edges.leaseprobe" not in loaded and "psycopg" in loaded
    status = {t["task"]: t["status"] for t in summary(proc)["tasks"]}
    assert status["retention_files"] == "ok" and status["dl_reconcile"] == "skipped"


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
