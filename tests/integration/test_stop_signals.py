"""SIGTERM mid-pass, for every job: the pass stops at its next safe point (or is
interrupted where it waits), the lease is released (not left to lapse), nothing
half-done is left, and the process ends by the signal (docs/contract.md, "Exit codes")."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from m10jobs.config import load_config
from m10jobs.edges.fallback import retry_local_fallback
from tests.conftest import BIN
from tests.stats_support import seed_day, stats_files


@contextlib.contextmanager
def blackhole() -> Iterator[str]:
    """A TCP endpoint that accepts connections and never answers: a pass waiting on it
    is stuck in a network call, not at a safe point."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(srv.accept()[0])

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()


@dataclass
class Case:
    script: str
    lock: str
    args: tuple[str, ...] = ()
    table: str | None = None  # held ACCESS EXCLUSIVE: the pass blocks in a query on it
    prepare: Callable[[dict[str, str], Path, Any, str], None] | None = None
    unchanged: Callable[[dict[str, str]], Any] | None = None  # state that must not change


def _stats(env: dict[str, str], tmp: Path, conn: Any, hole: str) -> None:
    seed_day(conn, datetime(2026, 10, 29, tzinfo=UTC).date(), 3)


def _fallback(env: dict[str, str], tmp: Path, conn: Any, hole: str) -> None:
    config = load_config(None, env={**env, "M10_R2_BUCKET": "b"})
    retry_local_fallback(config, b"data\n", "x.csv", "b", "k/x.csv", "text/csv", "down")
    env.update(
        {
            "M10_R2_ENDPOINT_URL": hole,
            "M10_R2_BUCKET": "b",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )


def _canary(env: dict[str, str], tmp: Path, conn: Any, hole: str) -> None:
    cfg = tmp / "canary.toml"
    cfg.write_text(
        f'[canary]\n[[canary.probes]]\nname = "web"\ntype = "http"\n'
        f'url = "{hole}/health"\ntimeout_s = 30\n'
    )
    env["M10_CONFIG"] = str(cfg)


def _rollback(env: dict[str, str], tmp: Path, conn: Any, hole: str) -> None:
    reports = Path(env["M10_STATE_DIR"]) / "canary" / "reports"
    reports.mkdir(parents=True)
    now = datetime.now(UTC).isoformat()
    (reports / "latest_report.json").write_text(
        json.dumps(
            {
                "schema_version": 1,
                "run_id": "r1",
                "verdict": "fail",
                "score": 0.1,
                "started_at": now,
                "finished_at": now,
                "probes": [],
            }
        )
    )
    cfg = tmp / "rollback.toml"
    cfg.write_text('[rollback]\ncommand = ["sleep", "30"]\n')
    env["M10_CONFIG"] = str(cfg)


def _uploaded_markers(env: dict[str, str]) -> list[str]:
    d = Path(env["M10_STATE_DIR"]) / "fallback-uploads"
    return sorted(p.name for p in d.glob("*.uploaded"))


def _report(env: dict[str, str]) -> bool:
    return (Path(env["M10_STATE_DIR"]) / "canary" / "reports" / "latest_report.json").exists()


CASES = [
    Case(
        "m10-daily-stats",
        "m10:daily_stats",
        ("--start-date", "2026-10-29", "--until", "2026-10-30"),
        table="m10_recovery.retention_jobs",
        prepare=_stats,
        unchanged=lambda env: stats_files(Path(env["M10_LOG_DIR"])),
    ),
    Case("m10-outbox-processor", "m10:outbox_processor", table="m10_recovery.outbox"),
    Case("m10-synthetic-traffic", "m10:synthetic_traffic", table="m10_recovery.outbox"),
    Case("aos-cost-snapshot-hourly", "aos:cost_snapshot_hourly", table="aos_cost.cost_records"),
    Case("aos-cost-snapshot-daily", "aos:cost_snapshot_daily", table="aos_cost.cost_records"),
    Case("m10-maintenance", "dl_reconcile", table="m10_recovery.dead_letter_archive"),
    Case(
        "m10-retry-r2-fallbacks",
        "m10:retry_r2_fallbacks",
        prepare=_fallback,
        unchanged=_uploaded_markers,
    ),
    Case("m10-canary", "m10:canary", prepare=_canary, unchanged=_report),
    Case("m10-rollback", "m10:rollback", prepare=_rollback),
]


# How long the test waits for the release after SIGTERM: only a guard against a hang,
# not the subject.  A pass that were not interrupted would stay in its wait far longer
# (a held table lock: until the test ends; the blackhole: 30 s read timeouts; the
# rollback command: 30 s), and a lease left to lapse would live its 120 s TTL.
RELEASE_WAIT_S = 20.0


def _live(conn: Any, lock: str) -> bool:
    """Held now (cluster-wide name, or the host-local `<lock>@<host>`)."""
    return bool(
        conn.execute(
            "SELECT count(*) AS n FROM m10_recovery.distributed_locks "
            "WHERE (lock_name = %s OR lock_name LIKE %s) AND expires_at > now()",
            (lock, lock + "@%"),
        ).fetchone()["n"]
    )


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("case", CASES, ids=[c.script for c in CASES])
def test_sigterm_mid_pass_releases_the_lease_and_ends_by_the_signal(
    case: Case, env: dict[str, str], conn: Any, dsn: str, tmp_path: Path
) -> None:
    env = {**env, "M10_LEASE_TTL_SECONDS": "120"}  # a lease left behind would outlive the test
    with blackhole() as hole, psycopg.connect(dsn) as blocker:
        if case.prepare:
            case.prepare(env, tmp_path, conn, hole)
        before = case.unchanged(env) if case.unchanged else None
        if case.table:
            blocker.execute(f"LOCK TABLE {case.table} IN ACCESS EXCLUSIVE MODE")
        proc = subprocess.Popen(
            [str(BIN / case.script), *case.args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait(lambda: _live(conn, case.lock), 30, f"{case.script} to take {case.lock}")
            if case.table:
                _wait(
                    lambda: (
                        conn.execute(
                            "SELECT count(*) AS n FROM pg_stat_activity"
                            " WHERE wait_event_type = 'Lock' AND application_name = %s",
                            (case.script,),
                        ).fetchone()["n"]
                        > 0
                    ),
                    30,
                    "the pass to block on its table",
                )
            else:
                time.sleep(0.5)  # inside its network call / command
            assert proc.poll() is None, proc.communicate()
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                _wait(
                    lambda: not _live(conn, case.lock), RELEASE_WAIT_S, "the lease to be released"
                )
            finally:
                released_after = time.monotonic() - t0
                out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            blocker.rollback()
    print(f"{case.script}: lease released {released_after:.2f}s after SIGTERM")
    assert proc.returncode == -signal.SIGTERM, (proc.returncode, err)
    assert "stopped by SIGTERM" in err and "Traceback" not in err, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["exit_code"] == 128 + signal.SIGTERM
    if case.unchanged:
        assert case.unchanged(env) == before
    if case.script == "m10-rollback":  # the command was signalled too, and its end recorded
        row = conn.execute(
            "SELECT outcome, finished_at FROM m10_recovery.rollback_actions "
            "WHERE report_run_id = 'r1'"
        ).fetchone()
        assert row is not None and row["finished_at"] is not None and row["outcome"] == "failed"
    held = conn.execute(
        "SELECT lock_name FROM m10_recovery.distributed_locks WHERE expires_at > now()"
    ).fetchall()
    assert held == []
