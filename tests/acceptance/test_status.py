"""`m10 status` against a real database and state dir put into each failure state the
runbook lists: the red line with its fix command appears and the exit code is 1; all
green is 0.  The state is made with the project's own writers (statsfile, canary_report,
fallback, metrics) and plain SQL on the real schema."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from m10jobs.config import load_config
from m10jobs.edges.fallback import retry_local_fallback
from m10jobs.edges.files import atomic_write, atomic_write_json
from m10jobs.edges.metrics import metrics_path, write_job_metrics
from m10jobs.jobs.canary import report as cr
from m10jobs.jobs.stats.statsfile import COLUMNS, csv_path, marker_for, marker_path, render
from m10jobs.registry import jobs

ROOT = Path(__file__).resolve().parents[2]


def write_stats(log_dir: Path, last: date) -> Path:
    """A whole month file up to `last` with a matching marker (what m10-daily-stats writes)."""
    rows = [
        {c: 0 for c in COLUMNS} | {"date": (last.replace(day=d)).isoformat()}
        for d in range(1, last.day + 1)
    ]
    path = csv_path(log_dir, last)
    log_dir.mkdir(parents=True, exist_ok=True)
    data = render(rows)
    atomic_write(path, data)
    atomic_write_json(marker_path(path), marker_for(path, data, rows))
    return path


def write_canary(state_dir: Path, finished: float, status: str = "pass") -> None:
    probe = cr.ProbeResult("db_ping", "db_ping", status, 1.0, 2.0, 1.0, True, "", 1.0)  # type: ignore[arg-type]
    report = cr.build(
        run_id="r1",
        target="test",
        host="h",
        started=finished - 1,
        finished=finished,
        results=[probe],
        thresholds=cr.Thresholds(),
    )
    path = cr.latest_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, report)


def ran_here(env: dict[str, str], script: str, code: int = 0, ago: float = 60) -> None:
    """The metrics file a run of `script` on this host leaves (the runner's writer)."""
    write_job_metrics(
        Path(env["M10_METRICS_DIR"]),
        script,
        exit_code=code,
        started=time.time() - ago,
        duration=1.0,
        succeeded=code in (0, 75),
    )


@pytest.fixture
def green(env: dict[str, str], conn: Any) -> dict[str, str]:
    """A host where everything is well: every job ran a minute ago, stats to yesterday, a
    fresh passing canary, every hour of cost snapshotted, nothing pending, no lease."""
    for job in jobs():
        ran_here(env, job.script)
    write_stats(Path(env["M10_LOG_DIR"]), datetime.now(UTC).date() - timedelta(days=1))
    write_canary(Path(env["M10_STATE_DIR"]), time.time() - 5)
    conn.execute("""
        INSERT INTO aos_cost.snapshot_periods
               (granularity, period_start, rows_written, amount_usd, record_count)
        SELECT 'hour', h, 0, 0, 0
          FROM generate_series(date_trunc('hour', now(), 'UTC') - interval '200 hours',
                               date_trunc('hour', now(), 'UTC') - interval '1 hour',
                               interval '1 hour') h""")
    return env


def status(cli: Any, env: dict[str, str], *args: str) -> Any:
    return cli("m10", "status", *args, env=env)


def test_all_green_exits_0(cli: Any, green: dict[str, str]) -> None:
    r = status(cli, green)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: nothing needs action" in r.stdout
    assert "RED" not in r.stdout
    assert re.search(r"^m10-canary\s+\d+s ago\s+0 pass done, or nothing to do ", r.stdout, re.M), (
        r.stdout
    )
    assert re.search(r"^JOB\s+LAST RUN\s+EXIT\s+NEXT\s+LEASE$", r.stdout, re.M)
    doc = json.loads(status(cli, green, "--json").stdout)
    assert doc["ok"] is True and doc["problems"] == []
    assert {j["job"] for j in doc["jobs"]} >= {"m10-maintenance", "m10-outbox-processor"}


def _stuck_lease(env: dict[str, str], conn: Any) -> None:
    conn.execute("""INSERT INTO m10_recovery.distributed_locks
                    (lock_name, holder_id, fencing_token, acquired_at, expires_at, extended_at)
                    VALUES ('m10:outbox_processor', 'ghost:4242:abc',
                            nextval('m10_recovery.fencing_token_seq'), now() - interval '2 hours',
                            now() + interval '4 minutes', now() - interval '1 minute')""")


def _expired_lease(env: dict[str, str], conn: Any) -> None:
    conn.execute("""INSERT INTO m10_recovery.distributed_locks
                    (lock_name, holder_id, fencing_token, acquired_at, expires_at)
                    VALUES ('m10:daily_stats', 'ghost:4242:abc',
                            nextval('m10_recovery.fencing_token_seq'),
                            now() - interval '20 minutes', now() - interval '10 minutes')""")


def _backlog(env: dict[str, str], conn: Any) -> None:
    conn.execute("SELECT m10_recovery.enqueue_outbox('t.e', '{}'::jsonb)")
    conn.execute("UPDATE m10_recovery.outbox SET created_at = now() - interval '1 hour'")


def _abandoned(env: dict[str, str], conn: Any) -> None:
    conn.execute("""INSERT INTO m10_recovery.dead_letter_archive
                    (dl_stream, dl_entry_id, reason, reconcile_outcome, reconciled_at)
                    VALUES ('m10:dead_letter', '1-0', 'poison', 'abandoned', now())""")


def _stale_stats(env: dict[str, str], conn: Any) -> None:
    log_dir = Path(env["M10_LOG_DIR"])
    for p in log_dir.iterdir():
        p.unlink()
    write_stats(log_dir, datetime.now(UTC).date() - timedelta(days=40))


def _marker_mismatch(env: dict[str, str], conn: Any) -> None:
    path = csv_path(Path(env["M10_LOG_DIR"]), datetime.now(UTC).date() - timedelta(days=1))
    marker = json.loads(marker_path(path).read_text())
    atomic_write_json(marker_path(path), {**marker, "rows": marker["rows"] + 1})


def _stale_canary(env: dict[str, str], conn: Any) -> None:
    write_canary(Path(env["M10_STATE_DIR"]), time.time() - 3600)


def _failing_canary(env: dict[str, str], conn: Any) -> None:
    write_canary(Path(env["M10_STATE_DIR"]), time.time() - 5, status="fail")


def _pending_upload(env: dict[str, str], conn: Any) -> None:
    config = load_config(None, env=env)
    path = retry_local_fallback(
        config, b"data", "x.csv", "bucket", "m10/x.csv", "text/csv", "EndpointConnectionError"
    )
    meta_path = path.with_name(path.name + ".meta.json")
    meta = json.loads(meta_path.read_text())
    meta["first_failure"] = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    atomic_write_json(meta_path, meta)


def _cost_gap(env: dict[str, str], conn: Any) -> None:
    conn.execute("""DELETE FROM aos_cost.snapshot_periods
                     WHERE period_start = date_trunc('hour', now(), 'UTC') - interval '5 hours'""")


def _job_failed(env: dict[str, str], conn: Any) -> None:
    ran_here(env, "m10-outbox-processor", code=69, ago=30)


def _job_late(env: dict[str, str], conn: Any) -> None:
    ran_here(env, "m10-canary", ago=3 * 3600)


STATES = {
    "lease-stuck": (_stuck_lease, "m10 locks release m10:outbox_processor --force"),
    "lease-expired": (_expired_lease, "m10 run reclaim_gc"),
    "outbox-backlog": (_backlog, "m10 outbox status"),
    "dl-abandoned": (_abandoned, "m10 dl replay"),
    "stats-stale": (_stale_stats, "m10-daily-stats"),
    "stats-marker": (_marker_mismatch, ".processed; m10-daily-stats"),
    "canary-stale": (_stale_canary, "m10-canary"),
    "canary-failing": (_failing_canary, "m10 canary status"),
    "uploads-pending": (_pending_upload, "m10-retry-r2-fallbacks"),
    "cost-gap": (_cost_gap, "aos-cost-snapshot-hourly"),
    "job-failed": (_job_failed, "m10 run m10-outbox-processor --verbose"),
    "job-late": (_job_late, "systemctl status m10-canary.timer"),
}


@pytest.mark.parametrize("check", list(STATES))
def test_failure_state_is_red_with_its_fix(
    check: str, cli: Any, green: dict[str, str], conn: Any
) -> None:
    make, fix = STATES[check]
    make(green, conn)
    r = status(cli, green)
    assert r.returncode == 1, r.stdout + r.stderr
    red = [line for line in r.stdout.splitlines() if line.strip().startswith("RED ")]
    assert [line.split()[1].rstrip(":") for line in red] == [check], r.stdout
    after = r.stdout.split(red[0], 1)[1].splitlines()
    assert fix in after[1] and after[1].strip().startswith("fix:"), r.stdout
    assert f"docs/runbook.md#{check}" in after[2]
    doc = json.loads(status(cli, green, "--json").stdout)
    assert doc["ok"] is False and [p["check"] for p in doc["problems"]] == [check]


def test_stuck_lease_is_shown_on_its_job(cli: Any, green: dict[str, str], conn: Any) -> None:
    _stuck_lease(green, conn)
    out = status(cli, green).stdout
    row = next(line for line in out.splitlines() if line.startswith("m10-outbox-processor "))
    assert "m10:outbox_processor ghost:4242:abc (held 2h00m)" in row


@pytest.mark.parametrize("code", [75, None])
def test_host_local_files_of_a_job_another_host_runs_are_not_red(
    cli: Any, green: dict[str, str], code: int | None
) -> None:
    """Several hosts, one wins each lease: a host whose stats/canary runs are skipped
    (75) or never happened here does not keep those files; that is not a problem."""
    for p in [*Path(green["M10_LOG_DIR"]).iterdir(), *Path(green["M10_STATE_DIR"]).rglob("*")]:
        if p.is_file():
            p.unlink()
    for script in ("m10-daily-stats", "m10-canary"):
        if code is None:
            metrics_path(green["M10_METRICS_DIR"], script).unlink()
        else:
            ran_here(green, script, code=code)
    r = status(cli, green)
    assert r.returncode == 0, r.stdout
    why = "last skipped here" if code == 75 else "has not run on this host"
    assert f"(m10-daily-stats {why}" in r.stdout and f"(m10-canary {why}" in r.stdout


def test_database_down_is_red_and_files_still_shown(cli: Any, green: dict[str, str]) -> None:
    env = {**green, "M10_DATABASE_URL": "postgresql://m10@127.0.0.1:1/none"}
    r = status(cli, env)
    assert r.returncode == 1
    assert "RED database:" in r.stdout and "unreachable" in r.stdout
    assert "canary        verdict pass" in r.stdout


def test_runbook_has_a_section_per_check() -> None:
    # the checks: every flow's health.py, m10jobs/health/, the status command itself
    source = "".join(p.read_text() for p in sorted((ROOT / "m10jobs").rglob("*.py")))
    checks = set(re.findall(r'\.red\(\s*"([a-z-]+)"', source))
    assert checks >= set(STATES)
    runbook = (ROOT / "docs/runbook.md").read_text()
    missing = [c for c in sorted(checks) if f'<a id="{c}"></a>' not in runbook]
    assert not missing, f"docs/runbook.md lacks a section for: {missing}"
