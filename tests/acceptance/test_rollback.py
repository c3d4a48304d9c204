"""m10-rollback end to end: acts at most once on a fresh failing report, as separate processes."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from m10jobs import canary_report as cr
from m10jobs.edges.files import atomic_write_json
from tests.canary_support import reports, task_summary, write_config
from tests.conftest import BIN


@pytest.fixture
def out(env: dict[str, str], tmp_path: Path) -> Path:
    """Where the rollback command records each run: one line per run it made."""
    path = tmp_path / "rolled-back.txt"
    env["ROLLBACK_OUT"] = str(path)
    return path


ECHO = ["sh", "-c", 'echo "$M10_CANARY_RUN_ID $M10_CANARY_VERDICT $M10_CANARY_REPORT" '
        '>> "$ROLLBACK_OUT"']


def configure(env: dict[str, str], tmp_path: Path, command: list[str] | None = None,
              **rollback: Any) -> None:
    write_config(env, tmp_path / "c.toml", probes=[
        {"name": "errors", "type": "sql", "query": "SELECT 5", "threshold": 1,
         "critical": True}], rollback={"command": command or ECHO, **rollback})


def put_report(env: dict[str, str], verdict: str = "fail", age_s: float = 0,
               **override: Any) -> dict[str, Any]:
    """Write a report as m10-canary would (same schema module), with a chosen verdict/age."""
    run_id = secrets.token_hex(6)
    now = time.time() - age_s
    result = cr.ProbeResult("errors", "sql", "fail" if verdict == "fail" else "pass", 5.0, 1.0,
                            1.0, True, "5 fails <= 1", 1.0)
    report = cr.build(run_id=run_id, target="t", host="h", started=now - 1, finished=now,
                      results=[result], thresholds=cr.Thresholds())
    report.update(verdict=verdict, **override)
    state = Path(env["M10_STATE_DIR"])
    atomic_write_json(cr.history_path(state, run_id), report)
    atomic_write_json(cr.latest_path(state), report)
    return report


def rollback(cli: Any, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return cli("m10-rollback", *args, env=env)


def actions(env: dict[str, str]) -> list[dict[str, Any]]:
    path = reports(env) / cr.ACTIONS_LOG
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_canary_fail_then_rollback_acts_once(cli: Any, env: dict[str, str], out: Path,
                                             tmp_path: Path) -> None:
    configure(env, tmp_path)
    assert cli("m10-canary", env=env).returncode == 0
    report = json.loads((reports(env) / cr.LATEST).read_text())
    assert report["verdict"] == "fail"

    first = rollback(cli, env)
    assert first.returncode == 0, first.stderr
    assert task_summary(first.stdout)["decision"] == "acted"
    run_id, verdict, path = out.read_text().split()
    assert (run_id, verdict) == (report["run_id"], "fail")
    assert json.loads(Path(path).read_text()) == report  # the report, via M10_CANARY_REPORT

    second = rollback(cli, env)
    assert second.returncode == 0
    assert task_summary(second.stdout)["decision"] == "already_acted"
    assert len(out.read_text().splitlines()) == 1
    log = actions(env)
    assert [r["event"] for r in log] == ["started", "finished"]
    assert log[1]["outcome"] == "succeeded" and log[1]["exit_status"] == 0
    assert {r["report_run_id"] for r in log} == {report["run_id"]}

    # A new failing report is a new decision: rollback acts on it (once).
    assert cli("m10-canary", env=env).returncode == 0
    assert rollback(cli, env).returncode == 0
    assert len(out.read_text().splitlines()) == 2


@pytest.mark.parametrize("verdict", ["pass", "marginal", "inconclusive"])
def test_other_verdicts_do_nothing(cli: Any, env: dict[str, str], out: Path, tmp_path: Path,
                                   verdict: str) -> None:
    configure(env, tmp_path)
    put_report(env, verdict)
    proc = rollback(cli, env)
    assert proc.returncode == 0
    assert task_summary(proc.stdout)["decision"] == f"verdict_{verdict}"
    assert f"verdict is {verdict}" in proc.stderr
    assert not out.exists() and actions(env) == []


def test_no_report_yet_does_nothing(cli: Any, env: dict[str, str], out: Path,
                                    tmp_path: Path) -> None:
    configure(env, tmp_path)
    proc = rollback(cli, env)
    assert proc.returncode == 0 and task_summary(proc.stdout)["decision"] == "no_report"
    assert not out.exists()


def test_stale_failing_report_is_ignored(cli: Any, env: dict[str, str], out: Path,
                                         tmp_path: Path) -> None:
    configure(env, tmp_path, max_report_age_s=60)
    put_report(env, "fail", age_s=120)
    proc = rollback(cli, env)
    assert proc.returncode == 0
    assert task_summary(proc.stdout)["decision"] == "stale"
    assert "older than max_report_age_s" in proc.stderr
    assert not out.exists() and actions(env) == []


def _truncated(env: dict[str, str]) -> bytes:
    put_report(env)
    return (reports(env) / cr.LATEST).read_bytes()[:150]


@pytest.mark.parametrize(("content", "message"), [
    (lambda env: b"\x00\xff garbage", "not UTF-8"),
    (lambda env: b"\x00 garbage", "not valid JSON"),
    (_truncated, "truncated"),
    (lambda env: b"", "is empty"),
    (lambda env: b"[1, 2]", "not a JSON object"),
    (lambda env: json.dumps(put_report(env, schema_version=99)).encode(), "schema_version 99"),
    (lambda env: json.dumps(put_report(env, verdict="explode")).encode(), "unknown verdict"),
    (lambda env: json.dumps({**put_report(env), "probes": "x"}).encode(), "probes"),
    (lambda env: json.dumps(put_report(env, finished_at="yesterday")).encode(), "ISO 8601"),
    (lambda env: json.dumps(put_report(env, age_s=-3600)).encode(), "in the future"),
])
def test_corrupt_truncated_or_unknown_report_exits_65_doing_nothing(
        cli: Any, env: dict[str, str], out: Path, tmp_path: Path, content: Any,
        message: str) -> None:
    configure(env, tmp_path)
    data = content(env)
    (reports(env) / cr.LATEST).parent.mkdir(parents=True, exist_ok=True)
    (reports(env) / cr.LATEST).write_bytes(data)
    for args in ((), ("--dry-run",)):
        proc = rollback(cli, env, *args)
        assert proc.returncode == 65, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and actions(env) == []


def test_failing_command_exits_1_is_recorded_and_not_repeated(
        cli: Any, env: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    configure(env, tmp_path, ["sh", "-c", f'echo run >> {marker}; echo "deploy says no"; exit 3'])
    report = put_report(env)
    proc = rollback(cli, env)
    assert proc.returncode == 1
    assert "exited 3" in proc.stderr and "will not be repeated" in proc.stderr
    assert "deploy says no" in proc.stderr
    finished = actions(env)[-1]
    assert finished["outcome"] == "failed" and finished["exit_status"] == 3
    assert finished["report_run_id"] == report["run_id"]

    again = rollback(cli, env)
    assert again.returncode == 0
    assert task_summary(again.stdout)["decision"] == "already_acted"
    assert "failed (exit status 3)" in again.stderr
    assert marker.read_text() == "run\n"


def test_command_timeout_kills_it_and_fails(cli: Any, env: dict[str, str],
                                            tmp_path: Path) -> None:
    configure(env, tmp_path, ["sh", "-c", "sleep 30 & wait"], timeout_s=0.5)
    put_report(env)
    t0 = time.monotonic()
    proc = rollback(cli, env)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 1 and "timed out after 0.5s" in proc.stderr
    assert actions(env)[-1]["outcome"] == "timeout"


def test_missing_command_binary_fails_and_is_recorded(cli: Any, env: dict[str, str],
                                                      tmp_path: Path) -> None:
    configure(env, tmp_path, ["/nonexistent/rollback"])
    put_report(env)
    proc = rollback(cli, env)
    assert proc.returncode == 1 and "could not be started" in proc.stderr
    assert actions(env)[-1]["outcome"] == "error"


def test_dry_run_says_it_would_act_and_does_nothing(cli: Any, env: dict[str, str], out: Path,
                                                    tmp_path: Path) -> None:
    configure(env, tmp_path)
    put_report(env)
    proc = rollback(cli, env, "--dry-run")
    assert proc.returncode == 0
    summary = task_summary(proc.stdout)
    assert summary["decision"] == "would_act" and summary["command"] == ECHO
    assert not out.exists() and actions(env) == []


def test_missing_command_config_exits_78(cli: Any, env: dict[str, str], tmp_path: Path) -> None:
    write_config(env, tmp_path / "c.toml", rollback={"timeout_s": 5})
    proc = rollback(cli, env)
    assert proc.returncode == 78 and "rollback.command" in proc.stderr


def test_corrupt_action_log_exits_65(cli: Any, env: dict[str, str], out: Path,
                                     tmp_path: Path) -> None:
    configure(env, tmp_path)
    put_report(env)
    (reports(env) / cr.ACTIONS_LOG).write_text('{"oops"\n{"report_run_id": "x"}\n')
    proc = rollback(cli, env)
    assert proc.returncode == 65 and "line 1" in proc.stderr
    assert not out.exists()


def test_torn_last_log_line_is_dropped_and_rollback_still_acts(cli: Any, env: dict[str, str],
                                                                out: Path,
                                                                tmp_path: Path) -> None:
    configure(env, tmp_path)
    report = put_report(env)
    (reports(env) / cr.ACTIONS_LOG).write_text('{"report_run_id": "aaa", "event": "fini')
    assert rollback(cli, env).returncode == 0
    assert out.read_text().split()[0] == report["run_id"]
    assert [r["event"] for r in actions(env)] == ["started", "finished"]


def _spawn(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([str(BIN / "m10-rollback")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_concurrent_rollbacks_act_once(env: dict[str, str], out: Path, tmp_path: Path) -> None:
    """Two processes on one failing report, started together: one acts, the other is
    skipped (lease busy, 75) or finds the report already claimed (0)."""
    configure(env, tmp_path, ["sh", "-c", 'sleep 0.5; echo "$M10_CANARY_RUN_ID" >> '
                                          '"$ROLLBACK_OUT"'])
    for _ in range(2):
        report = put_report(env)
        procs = [_spawn(env), _spawn(env)]
        codes = sorted(p.wait(timeout=60) for p in procs)
        assert codes in ([0, 0], [0, 75]), [p.stderr.read() for p in procs]
        assert out.read_text().splitlines().count(report["run_id"]) == 1
    assert len(out.read_text().splitlines()) == 2


def test_lease_lost_mid_command_second_holder_does_not_act_again(
        env: dict[str, str], out: Path, conn: Any, tmp_path: Path) -> None:
    """The first rollback's lease is force-released while its command runs; a second
    process takes the lease: the claim in the log stops it.  The first lets its command
    finish, records the outcome and exits 1 (lease lost)."""
    started = tmp_path / "started"
    configure(env, tmp_path, ["sh", "-c", f'touch {started}; sleep 2; '
                                          'echo "$M10_CANARY_RUN_ID" >> "$ROLLBACK_OUT"'])
    report = put_report(env)
    first = _spawn({**env, "M10_LEASE_TTL_SECONDS": "3"})
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    conn.execute("DELETE FROM m10_recovery.distributed_locks WHERE lock_name = 'm10:rollback'")
    second = _spawn(env)
    assert second.wait(timeout=60) == 0
    assert "never finished" in second.stderr.read()
    assert first.wait(timeout=60) == 1
    assert "was let finish: succeeded" in first.stderr.read()
    assert out.read_text().split() == [report["run_id"]]
    assert [r["event"] for r in actions(env)] == ["started", "finished"]


def test_rollback_killed_mid_command_is_not_repeated(cli: Any, env: dict[str, str], conn: Any,
                                                     tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    configure(env, tmp_path, ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"])
    put_report(env)
    proc = _spawn(env)
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    conn.execute("DELETE FROM m10_recovery.distributed_locks WHERE lock_name = 'm10:rollback'")
    pidfile.unlink()

    again = rollback(cli, env)
    assert again.returncode == 0
    assert "never finished" in again.stderr
    assert not pidfile.exists()  # the command was not run again
    assert [r["event"] for r in actions(env)] == ["started"]


def test_m10_canary_status_shows_the_report_and_rollback_records(
        cli: Any, env: dict[str, str], out: Path, tmp_path: Path) -> None:
    configure(env, tmp_path)
    assert cli("m10", "canary", "status", env=env).stdout.startswith("no canary report")
    report = put_report(env)
    assert rollback(cli, env).returncode == 0
    proc = cli("m10", "canary", "status", env=env)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["run_id"] == report["run_id"] and shown["verdict"] == "fail"
    assert shown["not_passing"][0]["name"] == "errors"
    assert [r["event"] for r in shown["rollback"]] == ["started", "finished"]
    (reports(env) / cr.LATEST).write_text("{")
    assert cli("m10", "canary", "status", env=env).returncode == 65
