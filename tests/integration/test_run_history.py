"""The run history (m10_recovery.job_runs): the runner records every task of every run that
reached the database, from every host; `m10 history` lists and filters them; retention
bounds them; and a database that dies mid-run loses nothing of the run's own record
(metrics, exit code)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from devenv.services import Postgres, free_port
from m10jobs.edges.metrics import metrics_path, parse
from tests.pg_ha_support import job_env, migrated, start_holder, wait_held


def history(cli: Any, *args: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    r = cli("m10", "history", "--json", "--limit", "1000", *args, **({"env": env} if env else {}))
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


@pytest.fixture
def three_hosts(cli: Any, env: dict[str, str]) -> dict[str, dict[str, str]]:
    """Runs on hosts a, b, c: maintenance on each (every task 0), and on b an outbox
    processor whose Redis is down (69)."""
    hosts = {h: {**env, "M10_HOSTNAME": h} for h in ("a", "b", "c")}
    for h in hosts.values():
        r = cli("m10-maintenance", env=h)
        assert r.returncode == 0, r.stderr[-2000:]
    down = {**hosts["b"], "M10_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    assert cli("m10-outbox-processor", env=down).returncode == 69
    return hosts


def test_every_run_of_every_host_is_listed_with_its_exit_code(
    cli: Any, three_hosts: dict[str, dict[str, str]]
) -> None:
    rows = history(cli)
    maintenance = [r for r in rows if r["job"] == "m10-maintenance"]
    assert {r["host"] for r in maintenance} == {"a", "b", "c"}
    assert len({r["run_id"] for r in maintenance}) == 3
    assert {r["exit_code"] for r in maintenance} == {0}
    assert {r["task"] for r in maintenance} >= {"reclaim_gc", "retention_cleanup"}
    (failed,) = [r for r in rows if r["job"] == "m10-outbox-processor"]
    assert failed["host"] == "b" and failed["exit_code"] == 69 and failed["status"] == "failed"
    assert "Redis at 127.0.0.1:" in failed["error"] and "unreachable" in failed["error"]
    # newest first; start before end; the summary's figures kept
    assert [r["id"] for r in rows][:1] == [failed["id"]]
    assert all(r["started_at"] <= r["ended_at"] for r in rows)
    gc = next(r for r in maintenance if r["task"] == "reclaim_gc")
    assert "reclaimed" in gc["summary"]

    text = cli("m10", "history")
    assert text.returncode == 0
    header, *lines = text.stdout.splitlines()
    assert header.split() == ["STARTED", "HOST", "JOB", "TASK", "RUN", "SECONDS", "EXIT", "ERROR"]
    assert any(" 69 " in line and "unreachable" in line for line in lines)


def test_filters_by_job_host_failed_and_since(
    cli: Any, three_hosts: dict[str, dict[str, str]], conn: Any
) -> None:
    assert {r["host"] for r in history(cli, "--host", "c")} == {"c"}
    assert {r["job"] for r in history(cli, "m10-outbox-processor")} == {"m10-outbox-processor"}
    assert {r["job"] for r in history(cli, "maintenance")} == {"m10-maintenance"}
    failed = history(cli, "--failed")
    assert [(r["host"], r["exit_code"]) for r in failed] == [("b", 69)]
    assert history(cli, "--failed", "--host", "a") == []

    # host a's run was two days ago (database clock)
    conn.execute("""UPDATE m10_recovery.job_runs
                       SET started_at = started_at - interval '2 days',
                           ended_at = ended_at - interval '2 days' WHERE host = 'a'""")
    assert {r["host"] for r in history(cli, "--since", "1d")} == {"b", "c"}
    assert {r["host"] for r in history(cli, "--since", "3d")} == {"a", "b", "c"}
    assert {r["host"] for r in history(cli, "--since", "2000-01-01")} == {"a", "b", "c"}
    r = cli("m10", "history", "--limit", "2")
    assert len(r.stdout.splitlines()) == 3  # the header and two rows

    bad = cli("m10", "history", "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr
    bad = cli("m10", "history", "m10-nosuchjob")
    assert bad.returncode == 2 and "no job 'm10-nosuchjob'" in bad.stderr


def test_dry_runs_are_not_recorded(cli: Any, conn: Any) -> None:
    assert cli("m10-maintenance", "--dry-run").returncode == 0
    assert conn.execute("SELECT count(*) AS n FROM m10_recovery.job_runs").fetchone()["n"] == 0


def test_retention_deletes_history_past_its_age(
    cli: Any, env: dict[str, str], conn: Any, tmp_path: Path
) -> None:
    for _ in range(2):
        assert cli("m10-outbox-processor").returncode == 0
    conn.execute("""UPDATE m10_recovery.job_runs
                       SET started_at = now() - interval '40 days',
                           ended_at = now() - interval '40 days'
                     WHERE id = (SELECT min(id) FROM m10_recovery.job_runs)""")
    cfg = tmp_path / "m10jobs.toml"
    cfg.write_text("[retention.job_runs]\nmax_age_days = 30\n")
    r = cli("m10", "run", "retention_cleanup", "--config", str(cfg))
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.splitlines()[-1])
    (task,) = summary["tasks"]
    assert task["summary"]["policies"]["job_runs"]["deleted"] == 1
    ages = conn.execute(
        "SELECT job, extract(epoch FROM now() - started_at) AS age FROM m10_recovery.job_runs"
    ).fetchall()
    assert all(r["age"] < 86400 for r in ages)
    # the two outbox runs less the old one, and the retention run itself
    assert sorted(r["job"] for r in ages) == ["m10-maintenance", "m10-outbox-processor"]
    # the deleted row was archived, as every table policy's rows are
    archived = list((Path(env["M10_STATE_DIR"]) / "retention-archive" / "job_runs").rglob("*"))
    assert any(p.is_file() for p in archived)


def test_postgresql_stopped_mid_run_keeps_metrics_and_exit_69(
    primary: Postgres, redis_url: str, tmp_path: Path
) -> None:
    dsn = migrated(primary)
    metrics = tmp_path / "metrics"
    env = job_env(dsn, redis_url, tmp_path, M10_METRICS_DIR=str(metrics))
    holder = start_holder("m10-maintenance", "reclaim_gc", env)  # parks mid-pass
    try:
        wait_held(dsn, ["reclaim_gc"])
        primary.stop()
        _, err = holder.communicate(timeout=120)
    finally:
        if holder.poll() is None:
            holder.send_signal(signal.SIGKILL)
    assert holder.returncode == 69, err[-3000:]
    assert "could not record this run in m10_recovery.job_runs" in err, err[-3000:]
    gauges = {
        g.name: g.value
        for g in parse(metrics_path(metrics, "m10-maintenance").read_text())
        if not g.labels
    }
    assert gauges["m10_job_last_exit_code"] == 69
