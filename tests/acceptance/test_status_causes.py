"""`m10 status` shows the cause, not only the symptom: an invalid config file, Redis down
or without the persistence the config requires, a failed job's own error line (from the
run history), the failing canary probe and what rollback did; green again after each fix.
Lease lines wait one GC interval (expired) and show within one interval (stuck)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from devenv.services import Redis, free_port
from m10jobs.edges.files import atomic_write_json
from m10jobs.jobs.canary import report as cr
from tests.acceptance.test_status import green, status

__all__ = ["green"]


@pytest.fixture
def free_redis_url() -> str:
    """A Redis URL nothing listens on: Redis down."""
    return f"redis://127.0.0.1:{free_port()}/0"


def red(r: Any, check: str) -> list[dict[str, Any]]:
    doc = json.loads(r.stdout)
    return [p for p in doc["problems"] if p["check"] == check]


def checks(r: Any) -> set[str]:
    return {p["check"] for p in json.loads(r.stdout)["problems"]}


def test_invalid_config_is_red_naming_m10_config_check_then_green(
    cli: Any, green: dict[str, str], tmp_path: Path
) -> None:
    cfg = tmp_path / "m10jobs.toml"
    cfg.write_text("[outbox]\nbatch_sise = 100\n")
    env = {**green, "M10_CONFIG": str(cfg)}
    r = status(cli, env, "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    (p,) = red(r, "config-invalid")
    assert "batch_sise" in p["message"] and "78" in p["message"]
    assert "m10 config check" in p["fix"]
    assert p["runbook"].endswith("runbook.md#config-invalid")
    text = status(cli, env)
    assert "RED config-invalid" in text.stdout and text.returncode == 1

    cfg.write_text("[outbox]\nbatch_size = 100\n")
    r = status(cli, env)
    assert r.returncode == 0, r.stdout + r.stderr


def test_redis_down_is_red_and_the_failed_job_shows_its_own_error_then_green(
    cli: Any, green: dict[str, str], free_redis_url: str
) -> None:
    down = {**green, "M10_REDIS_URL": free_redis_url}
    run = cli("m10-outbox-processor", env=down)
    assert run.returncode == 69, run.stderr[-2000:]
    r = status(cli, down, "--json")
    assert r.returncode == 1
    (p,) = red(r, "redis")
    assert "unreachable" in p["message"] and "M10_REDIS_URL" in p["fix"]
    assert p["runbook"].endswith("runbook.md#redis")
    (failed,) = red(r, "job-failed")
    # the job's own one-line error, from the run history
    assert "m10-outbox-processor last exited 69" in failed["message"]
    assert re.search(r"\d+s ago: Redis at 127\.0\.0\.1:", failed["message"]), failed["message"]
    assert "is unreachable" in failed["message"]
    row = next(j for j in json.loads(r.stdout)["jobs"] if j["job"] == "m10-outbox-processor")
    assert row["error"].startswith("Redis at ") and "M10_REDIS_URL" in row["error"]

    # the fix: Redis back (the URL that works), the next run succeeds
    assert cli("m10-outbox-processor", env=green).returncode == 0
    r = status(cli, green)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_failure_not_recorded_shows_no_stale_error(
    cli: Any, green: dict[str, str], free_redis_url: str
) -> None:
    """The history's last run of this host is a success while the metrics say the last
    run failed (it could not record, say PostgreSQL was down): no error line is made up."""
    assert cli("m10-outbox-processor", env=green).returncode == 0
    from tests.acceptance.test_status import ran_here

    ran_here(green, "m10-outbox-processor", code=69)
    (failed,) = red(status(cli, green, "--json"), "job-failed")
    assert failed["message"].endswith("ago"), failed["message"]


def test_redis_without_aof_is_red_only_when_require_aof_then_green(
    cli: Any, green: dict[str, str], tmp_path: Path
) -> None:
    # the session's Redis runs without AOF: a note, not red, by default
    r = status(cli, green)
    assert r.returncode == 0, r.stdout
    assert "note: no AOF" in r.stdout
    cfg = tmp_path / "m10jobs.toml"
    cfg.write_text("[outbox]\nrequire_aof = true\n")
    env = {**green, "M10_CONFIG": str(cfg)}
    r = status(cli, env, "--json")
    assert r.returncode == 1
    (p,) = red(r, "redis-persistence")
    assert "require_aof" in p["message"] and "appendonly yes" in p["fix"]
    assert p["runbook"].endswith("runbook.md#redis-persistence")

    durable = Redis(tmp_path / "aof", aof=True).start()
    try:
        r = status(cli, {**env, "M10_REDIS_URL": durable.url})
        assert r.returncode == 0, r.stdout + r.stderr
        assert "note:" not in r.stdout
    finally:
        durable.stop()


def _canary(state_dir: Path, run_id: str, failing: bool) -> None:
    probes = [
        cr.ProbeResult("db_ping", "db_ping", "pass", 1.0, 2.0, 1.0, True, "", 1.0),  # type: ignore[arg-type]
        cr.ProbeResult(
            "backlog",
            "outbox_backlog",
            "fail" if failing else "pass",  # type: ignore[arg-type]
            5000.0,
            1000.0,
            1.0,
            True,
            "5000 pending > 1000" if failing else "",
            1.0,
        ),
    ]
    now = time.time()
    report = cr.build(
        run_id=run_id,
        target="test",
        host="h",
        started=now - 1,
        finished=now,
        results=probes,
        thresholds=cr.Thresholds(),
    )
    atomic_write_json(cr.latest_path(state_dir), report)


def test_failing_probe_is_named_with_what_rollback_did_then_green(
    cli: Any, green: dict[str, str], conn: Any
) -> None:
    state = Path(green["M10_STATE_DIR"])
    _canary(state, "c1", failing=True)
    r = status(cli, green, "--json")
    (p,) = red(r, "canary-failing")
    assert "backlog fail (5000 pending > 1000)" in p["message"], p["message"]
    assert "db_ping" not in p["message"]
    assert "rollback: has not acted on this report" in p["message"]

    conn.execute("""INSERT INTO m10_recovery.rollback_actions
                    (report_run_id, host, lock_name, holder_id, fencing_token, rollback_run_id,
                     command, verdict, finished_at, outcome, exit_status, duration_s)
                    VALUES ('c1', 'hostb', 'm10:rollback@hostb', 'hostb:1:x', 1, 'rb1',
                            '["deploy", "--previous"]', 'fail', clock_timestamp(),
                            'succeeded', 0, 1.5)""")
    (p,) = red(status(cli, green, "--json"), "canary-failing")
    assert "rollback: acted on hostb at " in p["message"], p["message"]
    assert "ran its command): succeeded, exit 0" in p["message"]

    _canary(state, "c2", failing=False)  # the fix: a passing report
    r = status(cli, green)
    assert r.returncode == 0, r.stdout + r.stderr


def _lease(conn: Any, lock: str, acquired_ago_s: int, expires_in_s: int) -> None:
    conn.execute(
        """INSERT INTO m10_recovery.distributed_locks
           (lock_name, holder_id, fencing_token, acquired_at, expires_at, extended_at)
           VALUES (%s, 'ghost:4242:abc', nextval('m10_recovery.fencing_token_seq'),
                   now() - make_interval(secs => %s), now() + make_interval(secs => %s), now())""",
        (lock, acquired_ago_s, expires_in_s),
    )


def test_an_expired_lease_waits_one_gc_interval(cli: Any, green: dict[str, str], conn: Any) -> None:
    _lease(conn, "m10:daily_stats", 400, -60)  # expired a minute ago: the next GC frees it
    r = status(cli, green, "--json")
    assert "lease-expired" not in checks(r), r.stdout
    conn.execute("UPDATE m10_recovery.distributed_locks SET expires_at = now() - interval '6 min'")
    assert "lease-expired" in checks(status(cli, green, "--json"))


def test_a_stuck_lease_shows_within_one_interval(
    cli: Any, green: dict[str, str], conn: Any
) -> None:
    # m10-canary: every 5 minutes, unit timeout 4 minutes
    _lease(conn, "m10:canary", 200, 240)  # a pass in progress
    assert "lease-stuck" not in checks(status(cli, green, "--json"))
    conn.execute("UPDATE m10_recovery.distributed_locks SET acquired_at = now() - interval '310 s'")
    (p,) = red(status(cli, green, "--json"), "lease-stuck")
    assert "m10:canary" in p["message"] and "within 5m" in p["message"], p["message"]
