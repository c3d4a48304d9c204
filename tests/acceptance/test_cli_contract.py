"""The console scripts end to end, as systemd and operators call them
(docs/contract.md: console scripts, exit codes, configuration)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from m10jobs.registry import jobs
from tests.lease_support import expire_lease

Conn = psycopg.Connection[dict[str, Any]]


def log_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def test_a_pass_runs_logs_json_and_writes_metrics(cli: Any, env: dict[str, str]) -> None:
    p = cli("m10-maintenance")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["exit_code"] == 0 and summary["tasks"][0]["task"] == "reclaim_gc"
    records = log_lines(p.stderr)
    held = [r for r in records if r.get("lock") == "reclaim_gc" and "fencing_token" in r]
    assert held and all({"job", "run_id", "level", "message"} <= r.keys() for r in records)
    assert {r["run_id"] for r in records} == {summary["run_id"]}
    prom = (Path(env["M10_METRICS_DIR"]) / "m10_maintenance.prom").read_text()
    assert re.search(r'^m10_job_last_exit_code\{job="m10-maintenance"\} 0$', prom, re.M)
    assert "m10_job_last_success_timestamp_seconds" in prom


def test_no_database_url_exits_78_with_one_line(cli: Any, env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if k != "M10_DATABASE_URL"}
    p = cli("m10-maintenance", env=env)
    assert p.returncode == 78
    errors = [r for r in log_lines(p.stderr) if r["level"] == "ERROR"]
    assert len(errors) == 1 and "M10_DATABASE_URL" in errors[0]["message"]
    assert "Traceback" not in p.stderr


def test_unreachable_database_exits_69_without_password(cli: Any, env: dict[str, str]) -> None:
    bad = {**env, "M10_DATABASE_URL": "postgresql://m10:Sup3rSecretPw@127.0.0.1:1/m10"}
    p = cli("m10-maintenance", env=bad)
    assert p.returncode == 69
    assert "Sup3rSecretPw" not in p.stderr + p.stdout
    errors = [r for r in log_lines(p.stderr) if r["level"] == "ERROR"]
    assert len(errors) == 1 and "127.0.0.1:1" in errors[0]["message"]
    assert "Traceback" not in p.stderr


def test_lock_held_elsewhere_exits_75_and_names_the_holder(cli: Any, conn: Conn) -> None:
    conn.execute("SELECT m10_recovery.acquire_lock('reclaim_gc', 'other-host:7:abc', 60)")
    p = cli("m10", "run", "reclaim_gc")
    assert p.returncode == 75
    assert "other-host:7:abc" in p.stderr
    assert conn.execute("SELECT holder_id FROM m10_recovery.distributed_locks").fetchone() == {
        "holder_id": "other-host:7:abc"
    }


def test_bad_config_value_exits_78_naming_the_key(
    cli: Any, env: dict[str, str], tmp_path: Path
) -> None:
    cfg = tmp_path / "m10.toml"
    cfg.write_text("lease_ttl_seconds = 0\n")
    p = cli("m10-maintenance", "--config", str(cfg))
    assert p.returncode == 78 and "lease_ttl_seconds" in p.stderr
    cfg.write_text("lease_ttl_seconds = [\n")
    p = cli("m10-maintenance", "--config", str(cfg))
    assert p.returncode == 78 and "not valid TOML" in p.stderr
    p = cli("m10-maintenance", "--config", str(tmp_path / "missing.toml"))
    assert p.returncode == 78 and "does not exist" in p.stderr
    p = cli("m10-maintenance", env={**env, "M10_REDIS_URL": "http://nope"})
    assert p.returncode == 78 and "redis_url" in p.stderr


def test_flag_beats_env_beats_file(cli: Any, env: dict[str, str], tmp_path: Path) -> None:
    cfg = tmp_path / "m10.toml"
    cfg.write_text('database_url = "postgresql://file@127.0.0.1:2/f"\n')
    no_env = {k: v for k, v in env.items() if k != "M10_DATABASE_URL"}
    assert "127.0.0.1:2/" in cli("m10-maintenance", "--config", str(cfg), env=no_env).stderr
    p = cli("m10-maintenance", "--config", str(cfg))  # env wins over file
    assert p.returncode == 0
    p = cli(
        "m10-maintenance", "--config", str(cfg), "--database-url", "postgresql://flag@127.0.0.1:3/x"
    )
    assert p.returncode == 69 and "127.0.0.1:3/" in p.stderr


def test_usage_error_exits_2_and_help_has_an_example(cli: Any) -> None:
    assert cli("m10-maintenance", "--no-such-flag").returncode == 2
    p = cli("m10-maintenance", "--help")
    assert p.returncode == 0 and "Example:" in p.stdout and "--dry-run" in p.stdout


def test_dry_run_takes_no_lease_and_changes_nothing(
    cli: Any, conn: Conn, env: dict[str, str]
) -> None:
    conn.execute("SELECT m10_recovery.acquire_lock('old', 'dead', 60)")
    expire_lease(conn, "old")
    p = cli("m10-maintenance", "--dry-run")
    assert p.returncode == 0
    assert json.loads(p.stdout)["tasks"][0]["summary"]["would_reclaim"] == 1
    # text logs say what would be done, not just "would do"
    text = cli("m10-maintenance", "--dry-run", env={**env, "M10_LOG_FORMAT": "text"})
    assert "info: reclaim_gc would do: would_reclaim=1, outbox_processor={" in text.stderr
    assert "info: retention_cleanup would do: " in text.stderr
    rows = conn.execute("SELECT lock_name FROM m10_recovery.distributed_locks").fetchall()
    assert rows == [{"lock_name": "old"}]
    assert cli("m10-maintenance").returncode == 0
    assert (
        conn.execute("SELECT count(*) AS n FROM m10_recovery.distributed_locks").fetchone()["n"]
        == 0
    )


def test_operator_lock_commands(cli: Any, conn: Conn) -> None:
    conn.execute("SELECT m10_recovery.acquire_lock('m10:canary', 'h:1:r', 60)")
    p = cli("m10", "locks", "list")
    assert p.returncode == 0 and "m10:canary" in p.stdout and "h:1:r" in p.stdout
    assert "live" in p.stdout
    p = cli("m10", "locks", "release", "m10:canary")
    assert p.returncode == 2  # refuses without --force
    p = cli("m10", "locks", "release", "m10:canary", "--force")
    assert p.returncode == 0
    forced = [r for r in log_lines(p.stderr) if r["level"] == "WARNING"]
    assert forced and forced[0]["holder"] == "h:1:r" and "operator" in forced[0]
    assert cli("m10", "locks", "list").stdout.strip() == "no leases held"


def test_locks_list_and_jobs_show_each_lease_scope(cli: Any, conn: Conn) -> None:
    conn.execute("SELECT m10_recovery.acquire_lock('m10:canary', 'web-1:1:r', 60)")
    conn.execute("SELECT m10_recovery.acquire_lock('m10:rollback@web-2', 'web-2:1:r', 60)")
    rows = [json.loads(line) for line in cli("m10", "locks", "list", "--json").stdout.splitlines()]
    assert {r["lock_name"]: r["scope"] for r in rows} == {
        "m10:canary": "cluster",
        "m10:rollback@web-2": "host",
    }
    table = cli("m10", "locks", "list").stdout.splitlines()
    assert table[0].split()[:2] == ["LOCK", "SCOPE"]
    assert any(line.split()[:2] == ["m10:rollback@web-2", "host"] for line in table)
    jobs = {line.split()[0]: line.split()[1:3] for line in cli("m10", "jobs").stdout.splitlines()}
    assert jobs["m10-rollback"] == ["host", "m10:rollback@<hostname>"]
    assert jobs["m10-canary"] == ["cluster", "m10:canary"]
    assert jobs["m10-daily-stats"][0] == "mixed"


def test_m10_run_runs_a_job_or_a_single_task(cli: Any) -> None:
    p = cli("m10", "run", "reclaim_gc", "--dry-run")
    assert p.returncode == 0 and json.loads(p.stdout)["tasks"][0]["task"] == "reclaim_gc"
    p = cli("m10", "run", "maintenance")
    assert p.returncode == 0
    assert cli("m10", "run", "no-such-job").returncode == 2


def test_migrate_on_a_migrated_database_is_a_no_op(cli: Any) -> None:
    p = cli("m10", "db", "migrate")
    assert p.returncode == 0 and "up to date" in p.stdout


@pytest.mark.parametrize("script", [j.script for j in jobs()])
def test_help_imports_no_driver(env: dict[str, str], script: str) -> None:
    # start-up time is benchmarked; here the behaviour behind it: --help (and so the
    # registry and every declaration) imports no database, Redis or S3 client
    attr = script.replace("-", "_")
    code = (
        f"import sys; from m10jobs.cli.entry import {attr} as c\n"
        "try:\n    c(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = {'psycopg', 'redis', 'boto3', 'botocore'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
