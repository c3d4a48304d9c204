"""The jobs behind PgBouncer (Debian's pgbouncer), in session and transaction pool_mode:
database_pooling says which; without it the refusal is one line and exit 78."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from tests.conftest import BIN
from tests.outbox_support import enqueue, entries, write_config

pytestmark = pytest.mark.slow
OUTBOX = "m10-outbox-processor"


def through(pgbouncer: Any, mode: str, dsn: str, env: dict[str, str], pooling: str | None):
    bouncer = pgbouncer(mode)
    url = bouncer.dsn_for(conninfo_to_dict(dsn)["dbname"])
    extra = {"M10_DATABASE_POOLING": pooling} if pooling else {}
    return url, {**env, "M10_DATABASE_URL": url, **extra}


def test_without_database_pooling_pgbouncer_is_refused_with_78(
    pgbouncer: Any, dsn: str, env: dict[str, str], cli: Any
) -> None:
    _, benv = through(pgbouncer, "transaction", dsn, env, None)
    proc = cli(OUTBOX, env=benv)
    assert proc.returncode == 78, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if '"ERROR"' in ln]
    assert len(errors) == 1 and "database_pooling" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_jobs_run_behind_pgbouncer(
    mode: str,
    pgbouncer: Any,
    dsn: str,
    conn: psycopg.Connection[Any],
    env: dict[str, str],
    redis_url: str,
    cli: Any,
) -> None:
    url, benv = through(pgbouncer, mode, dsn, env, mode)
    enqueue(conn, 30, key_prefix=mode)
    for _ in range(2):  # a second run reuses pooled server sessions
        proc = cli(OUTBOX, env=benv)
        assert proc.returncode == 0, proc.stderr
    assert len(entries(redis_url, "m10:outbox")) == 30
    proc = cli("m10-maintenance", env=benv)
    assert proc.returncode == 0, proc.stderr
    proc = cli("m10", "status", env=benv)
    assert "postgresql    primary" in proc.stdout, proc.stdout + proc.stderr
    # leases work: held elsewhere -> 75
    conn.execute("SELECT m10_recovery.acquire_lock('m10:outbox_processor', 'other:1:x', 60)")
    proc = cli(OUTBOX, env=benv)
    assert proc.returncode == 75, proc.stderr
    # nothing a job or m10 status set for its session stayed with a pooled server session
    with psycopg.connect(url, autocommit=True, row_factory=dict_row, prepare_threshold=None) as b:
        for _ in range(5):
            assert b.execute("SHOW idle_in_transaction_session_timeout").fetchone() == {
                "idle_in_transaction_session_timeout": "0"
            }
            assert b.execute("SHOW default_transaction_read_only").fetchone() == {
                "default_transaction_read_only": "off"
            }


def test_transaction_pooling_linger_polls_instead_of_listening(
    pgbouncer: Any,
    dsn: str,
    conn: psycopg.Connection[Any],
    env: dict[str, str],
    redis_url: str,
    tmp_path: Path,
) -> None:
    _, benv = through(pgbouncer, "transaction", dsn, env, "transaction")
    cfg = write_config(tmp_path, "[outbox]\nlinger_seconds = 5\n")
    enqueue(conn, 1, key_prefix="first")
    proc = subprocess.Popen(
        [str(BIN / OUTBOX), "--config", str(cfg), "--linger"],
        env=benv,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not conn.execute(
        "SELECT 1 FROM m10_recovery.distributed_locks WHERE lock_name = 'm10:outbox_processor'"
    ).fetchone():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    while not entries(redis_url, "m10:outbox"):  # drained: lingering from now on
        assert time.monotonic() < deadline, "the first drain did not finish"
        time.sleep(0.02)
    time.sleep(0.5)
    enqueue(conn, 1, key_prefix="late")
    sent = time.monotonic()
    while len(entries(redis_url, "m10:outbox")) < 2:
        assert time.monotonic() - sent < 10, "not published while lingering"
        time.sleep(0.02)
    latency = time.monotonic() - sent
    print(f"\nlinger latency behind transaction pooling (polling): {latency:.2f}s")
    assert latency <= 3.0  # POOLED_POLL_S = 1 s, plus a drain
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
