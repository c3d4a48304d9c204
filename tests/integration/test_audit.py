"""`m10 flows --check` on a live database: passes when sound, names every breach."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg

Conn = psycopg.Connection[dict[str, Any]]


def test_a_fresh_installation_passes(cli: Any, env: dict[str, str]) -> None:
    assert cli("m10-maintenance").returncode == 0  # writes a metrics file to audit too
    p = cli("m10", "flows", "--check")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "FAIL" not in p.stdout and "breach(es)" in p.stdout


def test_breaches_are_named_and_exit_1(cli: Any, conn: Conn, env: dict[str, str]) -> None:
    conn.execute("GRANT SELECT ON m10_recovery.replay_log TO m10_app")
    conn.execute("GRANT EXECUTE ON FUNCTION m10_recovery.reclaim_expired_locks() TO PUBLIC")
    conn.execute("GRANT UPDATE ON m10_recovery.distributed_locks TO m10_app")
    conn.execute("SELECT m10_recovery.acquire_lock('rogue:lock', 'someone', 60)")
    state = Path(env["M10_STATE_DIR"])
    state.mkdir(parents=True)
    os.chmod(state, 0o777)
    metrics = Path(env["M10_METRICS_DIR"])
    metrics.mkdir(parents=True)
    (metrics / "m10_broken.prom").write_text('m10_thing{job="x" 1\n')
    p = cli("m10", "flows", "--check")
    assert p.returncode == 1
    out = p.stdout
    for expected in (
        "m10_app can SELECT m10_recovery.replay_log",
        "PUBLIC has EXECUTE on m10_recovery.reclaim_expired_locks()",
        "m10_app holds UPDATE on distributed_locks directly",
        "lock rogue:lock (held by someone) is not a registered lock",
        f"{state} is world-writable",
        "m10_broken.prom:1",
    ):
        assert expected in out, (expected, out)
