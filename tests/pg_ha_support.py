"""Helpers for the PostgreSQL HA tests: a migrated database on a server of its own (so it
can be restarted and promoted), holders parked mid-pass, and "first success" timing.

`python -m tests.pg_ha_support SCRIPT TASK` runs one task of a job through the real
runner (lease, heartbeat, release) with a pass that parks: it pings its connection
every 0.1 s until the connection breaks (then fails as a cut pass does) or 120 s pass.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from devenv.services import Postgres
from m10jobs.edges.migrate import migrate

BIN = Path(sys.executable).parent
DBNAME = "m10"
REPO = Path(__file__).resolve().parent.parent


def migrated(server: Postgres) -> str:
    """A migrated database on `server`; its DSN."""
    with psycopg.connect(server.dsn, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {DBNAME}")
    dsn = server.dsn_for(DBNAME)
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        migrate(c)
    return dsn


def job_env(dsn: str, redis_url: str, tmp: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("M10_")}
    return {
        **clean,
        "M10_DATABASE_URL": dsn,
        "M10_REDIS_URL": redis_url,
        "M10_STATE_DIR": str(tmp / "state"),
        "M10_LOG_DIR": str(tmp / "log"),
        "M10_CONFIG": "",
        **extra,
    }


def park(ctx: Any) -> dict[str, Any]:
    """A pass that holds its lease doing nothing but noticing a lost connection."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ctx.check()
        ctx.conn.execute("SELECT 1")
        time.sleep(0.1)
    return {}


def start_holder(script: str, task: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.pg_ha_support", script, task],
        env={**env, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_held(dsn: str, locks: list[str], timeout: float = 60) -> dict[str, int]:
    """{lock: token} once every lock is held (by whoever)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        while True:
            rows = c.execute(
                "SELECT lock_name, fencing_token FROM m10_recovery.distributed_locks "
                "WHERE lock_name = ANY(%s)",
                (locks,),
            ).fetchall()
            if len(rows) == len(locks):
                return {r["lock_name"]: r["fencing_token"] for r in rows}
            assert time.monotonic() < deadline, f"not all of {locks} held: {rows}"
            time.sleep(0.1)


def first_success(
    script: str, *args: str, env: dict[str, str], since: float, limit: float = 60
) -> tuple[float, list[int]]:
    """Run `script` until it exits 0 (as its timer would, back to back); seconds from
    `since` (time.monotonic()) to the end of that run, and every exit code seen."""
    codes: list[int] = []
    while True:
        proc = subprocess.run(
            [str(BIN / script), *args], env=env, capture_output=True, text=True, timeout=120
        )
        codes.append(proc.returncode)
        if proc.returncode == 0:
            return time.monotonic() - since, codes
        assert time.monotonic() - since < limit, (
            f"{script} never succeeded: exits {codes}; last stderr:\n{proc.stderr[-2000:]}"
        )
        time.sleep(0.2)


def main(argv: list[str]) -> int:
    from m10jobs import runner
    from m10jobs.registry import jobs

    script, name = argv
    job = next(j for j in jobs() if j.script == script)
    task = next(t for t in job.tasks if t.name == name)
    parked = dataclasses.replace(task, run="tests.pg_ha_support:park")
    job = dataclasses.replace(job, tasks=tuple(parked if t is task else t for t in job.tasks))
    return runner.run(job, only=parked)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
