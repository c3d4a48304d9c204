"""m10-rollback end to end: acts at most once on a fresh failing report, as separate processes,
also when several "hosts" (own state dir, own M10_HOSTNAME) see the same report."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from m10jobs.edges.files import atomic_write_json
from m10jobs.jobs.canary import report as cr
from tests.canary_support import reports, task_summary, write_config
from tests.clock_support import needs_faketime, skewed
from tests.conftest import BIN


@pytest.fixture
def out(env: dict[str, str], tmp_path: Path) -> Path:
    """Where the rollback command records each run: one line per run it made."""
    path = tmp_path / "rolled-back.txt"
    env["ROLLBACK_OUT"] = str(path)
    return path


ECHO = [
    "sh",
    "-c",
    'echo "$M10_CANARY_RUN_ID $M10_CANARY_VERDICT $M10_CANARY_REPORT" >> "$ROLLBACK_OUT"',
]


def configure(
    env: dict[str, str], tmp_path: Path, command: list[str] | None = None, **rollback: Any
) -> None:
    """No cooldown unless a test asks (most act on several reports in a row)."""
    env["M10_HOSTNAME"] = "host-a"
    write_config(
        env,
        tmp_path / "c.toml",
        probes=[
            {"name": "errors", "type": "sql", "query": "SELECT 5", "threshold": 1, "critical": True}
        ],
        rollback={
            "command": command or ECHO,
            "pass_env": ["ROLLBACK_OUT"],
            "cooldown_seconds": 0,
            **rollback,
        },
    )


def put_report(
    env: dict[str, str], verdict: str = "fail", age_s: float = 0, **override: Any
) -> dict[str, Any]:
    """Write a report as m10-canary would (same schema module), with a chosen verdict/age."""
    run_id = secrets.token_hex(6)
    now = time.time() - age_s
    result = cr.ProbeResult(
        "errors",
        "sql",
        "fail" if verdict == "fail" else "pass",
        5.0,
        1.0,
        1.0,
        True,
        "5 fails <= 1",
        1.0,
    )
    report = cr.build(
        run_id=run_id,
        target="t",
        host="h",
        started=now - 1,
        finished=now,
        results=[result],
        thresholds=cr.Thresholds(),
    )
    report.update(verdict=verdict, **override)
    state = Path(env["M10_STATE_DIR"])
    atomic_write_json(cr.history_path(state, run_id), report)
    atomic_write_json(cr.latest_path(state), report)
    return report


def rollback(cli: Any, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return cli("m10-rollback", *args, env=env)


def actions(env: dict[str, str]) -> list[dict[str, Any]]:
    """The cluster-wide rollback ledger, oldest claim first."""
    with psycopg.connect(env["M10_DATABASE_URL"], row_factory=dict_row) as c:
        return c.execute(
            "SELECT * FROM m10_recovery.rollback_actions ORDER BY started_at"
        ).fetchall()


def test_canary_fail_then_rollback_acts_once(
    cli: Any, env: dict[str, str], out: Path, tmp_path: Path
) -> None:
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
    [row] = actions(env)
    assert row["outcome"] == "succeeded" and row["exit_status"] == 0
    assert row["report_run_id"] == report["run_id"] and row["host"] == "host-a"
    assert row["lock_name"] == "m10:rollback@host-a" and row["fencing_token"] > 0

    # A new failing report is a new decision: rollback acts on it (once).
    assert cli("m10-canary", env=env).returncode == 0
    assert rollback(cli, env).returncode == 0
    assert len(out.read_text().splitlines()) == 2


@pytest.mark.parametrize("verdict", ["pass", "marginal", "inconclusive"])
def test_other_verdicts_do_nothing(
    cli: Any, env: dict[str, str], out: Path, tmp_path: Path, verdict: str
) -> None:
    configure(env, tmp_path)
    put_report(env, verdict)
    proc = rollback(cli, env)
    assert proc.returncode == 0
    assert task_summary(proc.stdout)["decision"] == f"verdict_{verdict}"
    assert f"verdict is {verdict}" in proc.stderr
    assert not out.exists() and actions(env) == []


def test_no_report_yet_does_nothing(
    cli: Any, env: dict[str, str], out: Path, tmp_path: Path
) -> None:
    configure(env, tmp_path)
    proc = rollback(cli, env)
    assert proc.returncode == 0 and task_summary(proc.stdout)["decision"] == "no_report"
    assert not out.exists()


def test_stale_failing_report_is_ignored(
    cli: Any, env: dict[str, str], out: Path, tmp_path: Path
) -> None:
    configure(env, tmp_path, max_report_age_s=60)
    put_report(env, "fail", age_s=120)
    proc = rollback(cli, env)
    assert proc.returncode == 0
    assert task_summary(proc.stdout)["decision"] == "stale"
    assert "older than max_report_age_s" in proc.stderr
    assert not out.exists() and actions(env) == []


@needs_faketime
@pytest.mark.parametrize(("canary_skew", "rollback_skew"), [("-1d", "+1h"), ("+1h", "-1d")])
def test_skewed_host_clocks_neither_hide_nor_revive_a_report(
    cli: Any, env: dict[str, str], out: Path, tmp_path: Path, canary_skew: str, rollback_skew: str
) -> None:
    """Report freshness is the database clock's: m10-canary stamps its report with it and
    m10-rollback ages it by it, whatever either host's clock says."""
    configure(env, tmp_path, max_report_age_s=600)
    assert cli("m10-canary", env=skewed(env, canary_skew)).returncode == 0
    fresh = rollback(cli, skewed(env, rollback_skew))
    assert fresh.returncode == 0, fresh.stderr
    assert task_summary(fresh.stdout)["decision"] == "acted"

    put_report(env, "fail", age_s=3600)  # an hour old by the (unskewed) database clock
    stale = rollback(cli, skewed(env, rollback_skew))
    assert stale.returncode == 0, stale.stderr
    assert task_summary(stale.stdout)["decision"] == "stale"
    assert len(out.read_text().splitlines()) == 1


def _truncated(env: dict[str, str]) -> bytes:
    put_report(env)
    return (reports(env) / cr.LATEST).read_bytes()[:150]


@pytest.mark.parametrize(
    ("content", "message"),
    [
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
    ],
)
def test_corrupt_truncated_or_unknown_report_exits_65_doing_nothing(
    cli: Any, env: dict[str, str], out: Path, tmp_path: Path, content: Any, message: str
) -> None:
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
    cli: Any, env: dict[str, str], tmp_path: Path
) -> None:
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


def test_command_timeout_kills_it_and_fails(cli: Any, env: dict[str, str], tmp_path: Path) -> None:
    configure(env, tmp_path, ["sh", "-c", "sleep 30 & wait"], timeout_s=0.5)
    put_report(env)
    t0 = time.monotonic()
    proc = rollback(cli, env)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 1 and "timed out after 0.5s" in proc.stderr
    assert actions(env)[-1]["outcome"] == "timeout"


def test_missing_command_binary_fails_and_is_recorded(
    cli: Any, env: dict[str, str], tmp_path: Path
) -> None:
    configure(env, tmp_path, ["/nonexistent/rollback"])
    put_report(env)
    proc = rollback(cli, env)
    assert proc.returncode == 1 and "could not be started" in proc.stderr
    assert actions(env)[-1]["outcome"] == "error"


def test_dry_run_says_it_would_act_and_does_nothing(
    cli: Any, env: dict[str, str], out: Path, tmp_path: Path
) -> None:
    configure(env, tmp_path)
    put_report(env)
    proc = rollback(cli, env, "--dry-run")
    assert proc.returncode == 0
    summary = task_summary(proc.stdout)
    assert summary["decision"] == "would_act" and summary["command"] == ECHO
    assert not out.exists() and actions(env) == []


def _spawn(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "m10-rollback")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _host(env: dict[str, str], tmp_path: Path, name: str) -> dict[str, str]:
    """Another host: its own state dir and host name, same database and config."""
    return {**env, "M10_HOSTNAME": name, "M10_STATE_DIR": str(tmp_path / name / "state")}


def _copy_report(report: dict[str, Any], host_env: dict[str, str]) -> None:
    state = Path(host_env["M10_STATE_DIR"])
    atomic_write_json(cr.history_path(state, report["run_id"]), report)
    atomic_write_json(cr.latest_path(state), report)


def test_three_hosts_one_failing_verdict_one_rollback(
    env: dict[str, str], out: Path, tmp_path: Path
) -> None:
    """Three hosts' rollbacks start together on the same failing report (each has it in its
    own state dir; their leases are per host, so all three run): exactly one command
    execution, the others find it claimed.  Repeated for a second report."""
    configure(
        env, tmp_path, ["sh", "-c", 'sleep 0.5; echo "$M10_CANARY_RUN_ID" >> "$ROLLBACK_OUT"']
    )
    hosts = [_host(env, tmp_path, f"host-{n}") for n in "abc"]
    for _ in range(2):
        report = put_report(env)
        for h in hosts:
            _copy_report(report, h)
        procs = [_spawn(h) for h in hosts]
        results = [(p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for p in procs]
        assert [code for code, _, _ in results] == [0, 0, 0], results
        decisions = sorted(task_summary(o)["decision"] for _, o, _ in results)
        assert decisions == ["acted", "already_acted", "already_acted"], results
        assert out.read_text().splitlines().count(report["run_id"]) == 1
    assert len(out.read_text().splitlines()) == 2
    assert len({r["host"] for r in actions(env)}) >= 1


def test_cooldown_holds_back_the_next_failing_report_cluster_wide(
    cli: Any, env: dict[str, str], out: Path, tmp_path: Path, conn: Any
) -> None:
    configure(env, tmp_path, cooldown_seconds=600)
    first = put_report(env)
    assert rollback(cli, env).returncode == 0
    # the next failing report, seen by another host: inside the cooldown, not acted on
    other = _host(env, tmp_path, "host-b")
    second = put_report(env)
    _copy_report(second, other)
    proc = rollback(cli, other)
    assert proc.returncode == 0, proc.stderr
    assert task_summary(proc.stdout)["decision"] == "cooldown"
    assert "cooldown_seconds 600" in proc.stderr and first["run_id"] in proc.stderr
    assert out.read_text().split()[0::3] == [first["run_id"]]
    # once the cooldown has passed (moved back by the database clock), it acts
    conn.execute(
        "UPDATE m10_recovery.rollback_actions SET started_at = started_at - interval '601 seconds'"
    )
    proc = rollback(cli, other)
    assert task_summary(proc.stdout)["decision"] == "acted", proc.stderr
    assert out.read_text().split()[0::3] == [first["run_id"], second["run_id"]]


def test_command_gets_only_its_configured_environment(
    cli: Any, env: dict[str, str], tmp_path: Path
) -> None:
    dump = tmp_path / "env.json"
    configure(
        env,
        tmp_path,
        [
            str(BIN / "python"),
            "-c",
            f"import json, os; json.dump(dict(os.environ), open({str(dump)!r}, 'w'))",
        ],
        pass_env=["KUBECONFIG", "NOT_SET_ANYWHERE"],
    )
    with (tmp_path / "c.toml").open("a") as f:
        f.write('[rollback.env]\nDEPLOY_TARGET = "prod"\n')
    secrets_env = {
        **env,
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-key",
        "AWS_ACCESS_KEY_ID": "AKIA",
        "PGPASSWORD": "pw",
        "KUBECONFIG": "/etc/kube.conf",
        "HOME": "/root",
        "SOME_OTHER": "x",
    }
    report = put_report(env)
    proc = rollback(cli, secrets_env)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(dump.read_text())
    got.pop("LC_CTYPE", None)  # Python's own locale coercion in the child, not passed by us
    assert got == {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "KUBECONFIG": "/etc/kube.conf",
        "DEPLOY_TARGET": "prod",
        "M10_CANARY_RUN_ID": report["run_id"],
        "M10_CANARY_VERDICT": "fail",
        "M10_CANARY_REPORT": got["M10_CANARY_REPORT"],
    }
    assert "s3cr3t" not in dump.read_text() and env["M10_DATABASE_URL"] not in dump.read_text()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("pass_env", ["M10_DATABASE_URL"]),
        ("pass_env", ["AWS_SECRET_ACCESS_KEY"]),
        ("env", {"PGPASSWORD": "x"}),
        ("pass_env", ["NOT A NAME"]),
    ],
)
def test_secrets_cannot_be_configured_into_the_command_env(
    cli: Any, env: dict[str, str], tmp_path: Path, key: str, value: Any
) -> None:
    configure(env, tmp_path)
    text = (tmp_path / "c.toml").read_text()
    if key == "env":
        text += "[rollback.env]\n" + "".join(f'{k} = "{v}"\n' for k, v in value.items())
    else:
        text = text.replace('pass_env = ["ROLLBACK_OUT"]', f"pass_env = {json.dumps(value)}")
    (tmp_path / "c.toml").write_text(text)
    proc = rollback(cli, env)
    assert proc.returncode == 78, proc.stderr
    assert f"rollback.{key}" in proc.stderr and "Traceback" not in proc.stderr


def test_unconfigured_command_is_nothing_to_do_with_one_warning(
    cli: Any, env: dict[str, str], tmp_path: Path
) -> None:
    write_config(env, tmp_path / "c.toml", rollback={"timeout_s": 5})
    put_report(env)
    proc = rollback(cli, env)
    assert proc.returncode == 0, proc.stderr
    assert task_summary(proc.stdout)["decision"] == "unconfigured"
    warnings = [
        json.loads(line)
        for line in proc.stderr.splitlines()
        if json.loads(line)["level"] == "WARNING"
    ]
    assert [w["message"] for w in warnings] == [
        "rollback.command is not configured (nor rollback.set_flags): nothing to do"
    ]
    assert actions(env) == []


def test_lease_lost_mid_command_second_holder_does_not_act_again(
    env: dict[str, str], out: Path, conn: Any, tmp_path: Path
) -> None:
    """The first rollback's lease is force-released while its command runs; a second
    process takes the lease: the claim in the log stops it.  The first lets its command
    finish, records the outcome and exits 1 (lease lost)."""
    started = tmp_path / "started"
    configure(
        env,
        tmp_path,
        ["sh", "-c", f'touch {started}; sleep 2; echo "$M10_CANARY_RUN_ID" >> "$ROLLBACK_OUT"'],
    )
    report = put_report(env)
    first = _spawn({**env, "M10_LEASE_TTL_SECONDS": "3"})
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    conn.execute(
        "DELETE FROM m10_recovery.distributed_locks WHERE lock_name = 'm10:rollback@host-a'"
    )
    second = _spawn(env)
    assert second.wait(timeout=60) == 0
    assert "never finished" in second.stderr.read()
    assert first.wait(timeout=60) == 1
    assert "was let finish: succeeded" in first.stderr.read()
    assert out.read_text().split() == [report["run_id"]]
    [row] = actions(env)
    assert row["outcome"] == "succeeded"


def test_rollback_killed_mid_command_is_not_repeated(
    cli: Any, env: dict[str, str], conn: Any, tmp_path: Path
) -> None:
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
    conn.execute(
        "DELETE FROM m10_recovery.distributed_locks WHERE lock_name = 'm10:rollback@host-a'"
    )
    pidfile.unlink()

    again = rollback(cli, env)
    assert again.returncode == 0
    assert "never finished" in again.stderr
    assert not pidfile.exists()  # the command was not run again
    [row] = actions(env)
    assert row["outcome"] is None and row["finished_at"] is None


def test_m10_canary_status_shows_the_report_and_rollback_records(
    cli: Any, env: dict[str, str], out: Path, tmp_path: Path
) -> None:
    configure(env, tmp_path)
    assert cli("m10", "canary", "status", env=env).stdout.startswith("no canary report")
    report = put_report(env)
    assert rollback(cli, env).returncode == 0
    proc = cli("m10", "canary", "status", env=env)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^verdict\s+fail \(score ", proc.stdout, re.M), proc.stdout
    assert re.search(r"^rollback\s+host=\S+ outcome=succeeded exit_status=0 ", proc.stdout, re.M)
    assert re.search(r"^PROBE\s+STATUS\s+VALUE\s+THRESHOLD\s+CRITICAL\s+DETAIL$", proc.stdout, re.M)
    assert re.search(r"^errors\s+fail\s", proc.stdout, re.M), proc.stdout
    proc = cli("m10", "canary", "status", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["run_id"] == report["run_id"] and shown["verdict"] == "fail"
    assert shown["not_passing"][0]["name"] == "errors"
    assert shown["rollback"]["outcome"] == "succeeded"
    assert shown["rollback"]["report_run_id"] == report["run_id"]
    (reports(env) / cr.LATEST).write_text("{")
    assert cli("m10", "canary", "status", env=env).returncode == 65


def test_rollback_as_a_member_of_m10_ops_claims_in_the_ledger(
    cli: Any, env: dict[str, str], out: Path, tmp_path: Path, conn: Any, dsn: str
) -> None:
    """The units log in as a role that is only a member of m10_ops (not a superuser)."""
    conn.execute("CREATE ROLE rollbackjob_t LOGIN IN ROLE m10_ops")
    configure(env, tmp_path)
    report = put_report(env)
    proc = rollback(
        cli,
        {
            **env,
            "M10_DATABASE_URL": dsn.replace(
                "postgresql://postgres@", "postgresql://rollbackjob_t@"
            ),
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert task_summary(proc.stdout)["decision"] == "acted"
    assert [r["report_run_id"] for r in actions(env)] == [report["run_id"]]
