"""m10-canary end to end: a real HTTP endpoint on loopback, real PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.canary_support import Endpoint, endpoint, latest, reports, task_summary, write_config
from tests.conftest import BIN

__all__ = ["endpoint"]


def http(ep: Endpoint, **kw: Any) -> dict[str, Any]:
    return {"name": kw.pop("name", "api"), "type": "http", "url": ep.url, **kw}


def sql(name: str, query: str, threshold: float = 1, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": "sql", "query": query, "threshold": threshold, **kw}


def run(cli: Any, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return cli("m10-canary", *args, env=env)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in report["probes"]}


def test_every_probe_type_passes(
    cli: Any, env: dict[str, str], endpoint: Endpoint, tmp_path: Path
) -> None:
    write_config(
        env,
        tmp_path / "c.toml",
        canary={"target": "api-staging"},
        probes=[
            http(endpoint, max_latency_ms=2000, weight=2, critical=True),
            {"name": "redis", "type": "redis"},
            sql("one", "SELECT 1", threshold=1, compare="=="),
            {"name": "backlog", "type": "outbox_backlog", "max_pending": 10},
            {"name": "oldest", "type": "outbox_oldest_age", "max_age_s": 60},
            {"name": "dl", "type": "dead_letter_rate", "max_per_hour": 1},
        ],
    )
    proc = run(cli, env)
    assert proc.returncode == 0, proc.stderr
    report = latest(env)
    assert report["verdict"] == "pass" and report["score"] == 1.0
    assert report["schema_version"] == 1 and report["target"] == "api-staging"
    assert report["counts"] == {"pass": 6, "fail": 0, "no_data": 0}
    probes = by_name(report)
    assert probes["api"]["critical"] is True and probes["api"]["weight"] == 2
    assert probes["backlog"]["value"] == 0 and probes["backlog"]["threshold"] == 10
    assert endpoint.hits == 1
    history = reports(env) / f"{report['run_id']}.json"
    assert json.loads(history.read_text()) == report
    assert task_summary(proc.stdout)["verdict"] == "pass"
    prom = (Path(env["M10_METRICS_DIR"]) / "m10_canary.prom").read_text()
    assert re.search(r"^m10_canary_score\{[^}]*\} 1(\.0)?$", prom, re.M), prom
    written = re.search(r"^m10_canary_report_timestamp_seconds\{[^}]*\} (\S+)$", prom, re.M)
    assert written and abs(float(written.group(1)) - time.time()) < 60, prom


@pytest.mark.parametrize(("failing", "verdict"), [(0, "pass"), (1, "marginal"), (2, "fail")])
def test_score_decides_pass_marginal_fail(
    cli: Any, env: dict[str, str], tmp_path: Path, failing: int, verdict: str
) -> None:
    probes = [sql(f"p{i}", "SELECT 5" if i < failing else "SELECT 0") for i in range(4)]
    write_config(
        env,
        tmp_path / "c.toml",
        probes=probes,
        canary={"pass_threshold": 0.9, "marginal_threshold": 0.7},
    )
    assert run(cli, env).returncode == 0
    report = latest(env)
    assert report["verdict"] == verdict
    assert report["score"] == (4 - failing) / 4


def test_critical_probe_failing_fails_whatever_the_score(
    cli: Any, env: dict[str, str], endpoint: Endpoint, tmp_path: Path
) -> None:
    endpoint.status = 503
    write_config(
        env,
        tmp_path / "c.toml",
        canary={"pass_threshold": 0.5, "marginal_threshold": 0.4},
        probes=[
            http(endpoint, critical=True),
            *[sql(f"ok{i}", "SELECT 0", weight=5) for i in range(3)],
        ],
    )
    assert run(cli, env).returncode == 0
    report = latest(env)
    assert report["verdict"] == "fail" and report["score"] > 0.9
    assert "api" in report["reason"]
    assert by_name(report)["api"]["detail"] == "HTTP 503, expected 200"


def test_same_failure_on_a_non_critical_probe_is_only_marginal(
    cli: Any, env: dict[str, str], endpoint: Endpoint, tmp_path: Path
) -> None:
    endpoint.status = 503
    write_config(
        env,
        tmp_path / "c.toml",
        canary={"pass_threshold": 0.95},
        probes=[http(endpoint), *[sql(f"ok{i}", "SELECT 0", weight=5) for i in range(3)]],
    )
    assert run(cli, env).returncode == 0
    assert latest(env)["verdict"] == "marginal"


def test_too_many_probes_without_data_is_inconclusive(
    cli: Any, env: dict[str, str], tmp_path: Path
) -> None:
    write_config(
        env,
        tmp_path / "c.toml",
        probes=[
            sql("null", "SELECT NULL::int"),
            sql("norow", "SELECT 1 WHERE false"),
            sql("text", "SELECT 'abc'"),
            sql("nan", "SELECT 'NaN'::float8"),
            sql("ok", "SELECT 0"),
        ],
    )
    assert run(cli, env).returncode == 0
    report = latest(env)
    assert report["verdict"] == "inconclusive"
    assert report["counts"] == {"pass": 1, "fail": 0, "no_data": 4}
    assert report["score"] == 1.0  # the one probe with data passed, but that is not enough


def test_critical_probe_without_data_is_inconclusive(
    cli: Any, env: dict[str, str], tmp_path: Path
) -> None:
    write_config(
        env,
        tmp_path / "c.toml",
        probes=[
            sql("broken", "SELECT * FROM no_such_table", critical=True),
            *[sql(f"ok{i}", "SELECT 0", weight=3) for i in range(3)],
        ],
    )
    assert run(cli, env).returncode == 0
    report = latest(env)
    assert report["verdict"] == "inconclusive" and "broken" in report["reason"]
    assert "no_such_table" in by_name(report)["broken"]["detail"]


def test_sql_probe_is_one_read_only_statement(
    cli: Any, env: dict[str, str], conn: Any, tmp_path: Path
) -> None:
    write_config(
        env,
        tmp_path / "c.toml",
        probes=[
            sql("sneaky", "SELECT 0; COMMIT; CREATE TABLE public.oops ()"),
            sql(
                "writer",
                "WITH w AS (INSERT INTO m10_recovery.outbox (event_type, payload) "
                "VALUES ('e', '{}') RETURNING 1) SELECT count(*) FROM w",
            ),
            sql(
                "like",
                "SELECT count(*) FROM pg_class WHERE relname LIKE 'pg_%'",
                threshold=0,
                compare=">",
            ),
        ],
    )
    assert run(cli, env).returncode == 0
    probes = by_name(latest(env))
    assert probes["sneaky"]["status"] == "no_data" and probes["writer"]["status"] == "no_data"
    assert probes["like"]["status"] == "pass"  # a literal % is not a placeholder
    assert "read-only" in probes["writer"]["detail"]
    assert conn.execute(
        "SELECT to_regclass('public.oops') IS NULL AND NOT EXISTS "
        "(SELECT FROM m10_recovery.outbox) AS clean"
    ).fetchone()["clean"]


def test_probes_time_out(cli: Any, env: dict[str, str], endpoint: Endpoint, tmp_path: Path) -> None:
    """A hung endpoint fails its probe after timeout_s; a hung query has no data."""
    endpoint.delay = 3
    write_config(
        env,
        tmp_path / "c.toml",
        probes=[
            http(endpoint, timeout_s=0.5),
            sql("slow", "SELECT 1 FROM pg_sleep(3)", timeout_s=0.5),
            sql("ok", "SELECT 0"),
        ],
    )
    t0 = time.monotonic()
    assert run(cli, env).returncode == 0
    assert time.monotonic() - t0 < 5.5  # bounded by the timeouts, not the 3 s hangs (x2)
    probes = by_name(latest(env))
    assert probes["api"]["status"] == "fail" and "timed out" in probes["api"]["detail"]
    assert probes["slow"]["status"] == "no_data" and "timed out" in probes["slow"]["detail"]
    assert probes["ok"]["status"] == "pass"


def test_slow_answer_within_timeout_fails_latency_threshold(
    cli: Any, env: dict[str, str], endpoint: Endpoint, tmp_path: Path
) -> None:
    endpoint.delay = 0.3
    write_config(env, tmp_path / "c.toml", probes=[http(endpoint, max_latency_ms=100)])
    assert run(cli, env).returncode == 0
    api = by_name(latest(env))["api"]
    assert api["status"] == "fail" and api["value"] >= 300 and api["threshold"] == 100


def test_unreachable_targets_fail(cli: Any, env: dict[str, str], tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_config(
        env,
        tmp_path / "c.toml",
        probes=[
            {"name": "api", "type": "http", "url": f"http://127.0.0.1:{port}/"},
            {
                "name": "redis",
                "type": "redis",
                "url": f"redis://:hunter2@127.0.0.1:{port}/0",
                "timeout_s": 1,
            },
        ],
    )
    proc = run(cli, env)
    assert proc.returncode == 0
    probes = by_name(latest(env))
    assert probes["api"]["status"] == "fail" and "unreachable" in probes["api"]["detail"]
    assert probes["redis"]["status"] == "fail"
    assert latest(env)["verdict"] == "fail"
    assert "hunter2" not in proc.stderr + json.dumps(latest(env))


def test_outbox_and_dead_letter_probes_measure_the_tables(
    cli: Any, env: dict[str, str], conn: Any, tmp_path: Path
) -> None:
    for i in range(3):
        conn.execute(
            "SELECT m10_recovery.enqueue_outbox('e', '{}'::jsonb, NULL, NULL, %s)", (f"k{i}",)
        )
    conn.execute(
        "UPDATE m10_recovery.outbox SET created_at = now() - interval '10 minutes' "
        "WHERE idempotency_key = 'k0'"
    )
    conn.execute("UPDATE m10_recovery.outbox SET status = 'published' WHERE idempotency_key = 'k2'")
    for i in range(4):
        conn.execute(
            "INSERT INTO m10_recovery.dead_letter_archive (dl_stream, dl_entry_id, "
            "reason, dead_lettered_at) VALUES ('m10:dead_letter', %s, 'x', "
            "now() - %s * interval '20 minutes')",
            (f"{i}-0", i),
        )
    write_config(
        env,
        tmp_path / "c.toml",
        probes=[
            {"name": "backlog", "type": "outbox_backlog", "max_pending": 1},
            {"name": "oldest", "type": "outbox_oldest_age", "max_age_s": 300},
            {"name": "dl", "type": "dead_letter_rate", "max_per_hour": 2, "window_s": 3600},
        ],
    )
    assert run(cli, env).returncode == 0
    probes = by_name(latest(env))
    assert probes["backlog"]["value"] == 2 and probes["backlog"]["status"] == "fail"
    assert 595 < probes["oldest"]["value"] < 700 and probes["oldest"]["status"] == "fail"
    assert probes["dl"]["value"] == 3 and probes["dl"]["status"] == "fail"  # 0, 20, 40 min ago


def test_dry_run_probes_but_writes_nothing(
    cli: Any, env: dict[str, str], endpoint: Endpoint, tmp_path: Path
) -> None:
    write_config(env, tmp_path / "c.toml", probes=[http(endpoint)])
    proc = run(cli, env, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert task_summary(proc.stdout)["verdict"] == "pass"
    assert not reports(env).exists()


def test_history_is_trimmed_to_history_keep(cli: Any, env: dict[str, str], tmp_path: Path) -> None:
    write_config(
        env, tmp_path / "c.toml", canary={"history_keep": 2}, probes=[sql("ok", "SELECT 0")]
    )
    for _ in range(3):
        assert run(cli, env).returncode == 0
    copies = sorted(p.name for p in reports(env).glob("*.json") if p.name != "latest_report.json")
    assert len(copies) == 2 and f"{latest(env)['run_id']}.json" in copies


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"canary": {"target": "x"}}, "canary.probes is empty"),
        ({"probes": [{"name": "a", "type": "ftp"}]}, "canary.probes[0].type"),
        ({"probes": [{"name": "a", "type": "redis", "max_latncy_ms": 5}]}, "max_latncy_ms"),
        ({"probes": [{"name": "a", "type": "sql", "query": "SELECT 1"}]}, "threshold: is missing"),
        ({"probes": [sql("a", "SELECT 1"), sql("a", "SELECT 2")]}, "duplicate probe name"),
        (
            {
                "canary": {"pass_threshold": 0.5, "marginal_threshold": 0.8},
                "probes": [sql("a", "SELECT 1")],
            },
            "marginal_threshold",
        ),
    ],
)
def test_bad_config_exits_78_with_one_line(
    cli: Any, env: dict[str, str], tmp_path: Path, sections: dict[str, Any], message: str
) -> None:
    write_config(env, tmp_path / "c.toml", **sections)
    proc = run(cli, env)
    assert proc.returncode == 78
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not reports(env).exists()


# -- crash safety --------------------------------------------------------------------------


def _start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "m10-canary")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill(proc: subprocess.Popen[str], conn: Any) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    conn.execute("DELETE FROM m10_recovery.distributed_locks WHERE lock_name = 'm10:canary'")


def test_sigkill_while_writing_the_report_leaves_the_previous_one_whole(
    cli: Any, env: dict[str, str], conn: Any, tmp_path: Path
) -> None:
    """Killed while writing its reports (blocked on the directory's file lock, and later
    in a race against a large write): the previous report stays whole, the next run
    recovers."""
    from filelock import FileLock

    from m10jobs.edges.files import DIR_LOCK_NAME

    write_config(env, tmp_path / "c.toml", probes=[sql("ok", "SELECT 0")])
    assert run(cli, env).returncode == 0
    before = (reports(env) / "latest_report.json").read_bytes()

    lock = FileLock(str(reports(env) / DIR_LOCK_NAME))  # the directory's one lock
    log = tmp_path / "canary.log"
    with lock, log.open("w") as err:
        proc = subprocess.Popen(
            [str(BIN / "m10-canary")], env=env, stdout=subprocess.DEVNULL, stderr=err, text=True
        )
        deadline = time.monotonic() + 30
        # The probe ran: the report is built and its writer waits for the lock we hold.
        while "probe ok" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "probe ok" in log.read_text()
        time.sleep(0.3)
        assert proc.poll() is None  # still blocked
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        conn.execute("DELETE FROM m10_recovery.distributed_locks WHERE lock_name = 'm10:canary'")
    assert (reports(env) / "latest_report.json").read_bytes() == before

    # Now against a large report, killed whenever its temp file shows up.
    write_config(
        env, tmp_path / "c.toml", canary={"target": "x" * 4_000_000}, probes=[sql("ok", "SELECT 0")]
    )
    caught = 0
    for _ in range(4):
        previous = latest(env)["run_id"]
        proc = _start(env)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if any(reports(env).glob(".latest_report.json.*.tmp")):
                caught += 1
                break
        _kill(proc, conn)
        report = latest(env)  # always a whole, parseable report: the old one or the new one
        assert report["run_id"] in (previous, *(p.stem for p in reports(env).glob("*.json")))
        assert report["verdict"] == "pass"
    assert caught  # at least one kill landed while the temp file was being written
    assert run(cli, env).returncode == 0
    assert os.path.getsize(reports(env) / "latest_report.json") > 4_000_000
