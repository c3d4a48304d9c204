"""Secrets never reach an output: for every secret-bearing place, the jobs and commands
that could print it run as separate processes (success, config error, failure,
--verbose, `m10 config check`, a rollback command echoing its environment and the
decoded database password), and no secret -- raw, percent-decoded or -encoded --
appears on stdout, stderr, in the metrics, the canary reports, or the rollback ledger.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import psycopg
import pytest

from tests.acceptance.test_rollback import put_report
from tests.canary_support import Endpoint, endpoint  # noqa: F401  (fixture)

# One distinct value per secret source; the decoded/encoded forms are checked too.
DSN_PW = "dsn%40Pw%2F7x"  # in the URI percent-encoded; decoded: dsn@Pw/7x
MULTI_PW = "mh%23Pw%3A77"  # a multi-host URI's; decoded: mh#Pw:77
CONNINFO_PW = "cinfo pw'9Q"  # conninfo form, quoted and escaped
AWS_SECRET = "awsSecretKey/abc123XYZ"
AWS_SESSION = "awsSessionTok+987"
ENV_TOKEN = "envTok-3141592"  # [rollback.env] under a secret-looking name
ENV_NEUTRAL = "neutralVal-2718"  # [rollback.env] under a neutral name
PASSED = "passedVal-1618"  # a pass_env variable's value
ARGV_TOKEN = "argvTok-5772"  # rollback.command: --api-token VALUE
PROBE_PW = "probePw%21x9"  # an http probe URL's password; decoded: probePw!x9
PROBE_TOKEN = "probeTok-4669"  # an http probe URL's ?api_token=
STRAY = "straySecret-1414"  # a secret-looking key the file must not have
REFUSED_PW = "refusedPg-6931"  # rollback.env PGPASSWORD: a refused name

ALL = [
    DSN_PW,
    MULTI_PW,
    CONNINFO_PW,
    AWS_SECRET,
    AWS_SESSION,
    ENV_TOKEN,
    ENV_NEUTRAL,
    PASSED,
    ARGV_TOKEN,
    PROBE_PW,
    PROBE_TOKEN,
    STRAY,
    REFUSED_PW,
]
FORMS = sorted({f for s in ALL for f in (s, unquote(s), quote(s, safe=""))})

# The rollback command: prints its argv, its whole environment and the database URL
# it was handed, percent-decoded (as a deploy tool logging its connection would).
ECHO = (
    "import os, sys, urllib.parse\n"
    "print('argv', sys.argv)\n"
    "[print(f'{k}={v}') for k, v in sorted(os.environ.items())]\n"
    "print('database', urllib.parse.unquote(os.environ['APP_DATABASE_URL']))\n"
    "sys.exit(int(sys.argv[1]))\n"
)


def dsn_form(dsn: str, form: str) -> str:
    """The test database's DSN carrying a password (trust auth ignores it)."""
    u = urlsplit(dsn)
    host, port, db = u.hostname, u.port, u.path.lstrip("/")
    return {
        "uri": f"postgresql://postgres:{DSN_PW}@{host}:{port}/{db}",
        "multihost": f"postgresql://postgres:{MULTI_PW}@{host}:{port},{host}:{port}/{db}",
        "conninfo": (
            f"host={host} port={port} dbname={db} user=postgres "
            f"password='{CONNINFO_PW.replace(chr(39), chr(92) + chr(39))}'"
        ),
    }[form]


def config_text(
    exit_status: int = 0, *, probe_url: str = "", refused: bool = False, stray: bool = True
) -> str:
    command = [sys.executable, "-c", ECHO, str(exit_status), "--api-token", ARGV_TOKEN]
    lines = [f"stray_secret = {json.dumps(STRAY)}"] if refused and stray else []
    if probe_url:
        lines += [
            "[[canary.probes]]",
            'name = "web"',
            'type = "http"',
            f"url = {json.dumps(probe_url)}",
        ]
    lines += [
        "[rollback]",
        f"command = {json.dumps(command)}",
        'pass_env = ["APP_DEPLOY_HANDLE", "APP_DATABASE_URL"]',
        "cooldown_seconds = 0",
        "[rollback.env]",
        f"API_TOKEN = {json.dumps(ENV_TOKEN)}",
        f"DEPLOY_TARGET = {json.dumps(ENV_NEUTRAL)}",
        'SHORT = "Zq9"',
    ]
    if refused:
        lines.append(f"PGPASSWORD = {json.dumps(REFUSED_PW)}")
    return "\n".join(lines) + "\n"


@dataclass
class Run:
    env: dict[str, str]
    tmp: Path
    cli: Any
    outputs: list[str]

    def __call__(self, script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        proc = self.cli(script, *args, env={**self.env, **env})
        self.outputs += [proc.stdout, proc.stderr]
        return proc

    def configure(self, **kw: Any) -> None:
        path = self.tmp / "secret.toml"
        path.write_text(config_text(**kw))
        self.env["M10_CONFIG"] = str(path)


def _acts(run: Run) -> None:
    put_report(run.env)
    proc = run("m10-rollback", "--verbose")
    assert proc.returncode == 0, proc.stderr
    assert "database " in proc.stderr and "API_TOKEN=***" in proc.stderr  # output logged


def _fails(run: Run) -> None:
    run.configure(exit_status=3)
    put_report(run.env)
    proc = run("m10-rollback")
    assert proc.returncode == 1, proc.stderr
    assert '"level": "ERROR"' in proc.stderr and "DEPLOY_TARGET=***" in proc.stderr


def _dry_run(run: Run) -> None:
    put_report(run.env)
    assert run("m10-rollback", "--dry-run", "--verbose").returncode == 0


def _config_error(run: Run) -> None:
    run.configure(refused=True)
    for script in ("m10-rollback", "m10-canary", "m10-outbox-processor"):
        proc = run(script)
        assert proc.returncode == 78, proc.stderr
        assert "config stray_secret: unknown key" in proc.stderr and "1 more" in proc.stderr
    check = run("m10", "config", "check")
    assert check.returncode == 78
    assert "stray_secret: unknown key" in check.stderr and "PGPASSWORD" in check.stderr
    run.configure(refused=True, stray=False)  # the refused name alone: the first problem
    proc = run("m10-daily-stats")
    assert proc.returncode == 78 and "rollback.env" in proc.stderr, proc.stderr
    assert "(PGPASSWORD is never given" in proc.stderr


def _config_check(run: Run) -> None:
    proc = run("m10", "config", "check", "--database-url", run.env["M10_DATABASE_URL"])
    assert proc.returncode == 0, proc.stderr
    assert '"API_TOKEN" = "***"' in proc.stdout and '"DEPLOY_TARGET" = "***"' in proc.stdout
    assert '"SHORT" = "***"' in proc.stdout and "Zq9" not in proc.stdout  # short: masked too


def _unreachable(run: Run) -> None:
    down = run.env["M10_DATABASE_URL"].replace(str(urlsplit(run.env["M10_DATABASE_URL"]).port), "1")
    proc = run("m10-rollback", "--verbose", M10_DATABASE_URL=down)
    assert proc.returncode == 69, proc.stderr


def _canary(run: Run, url: str) -> None:
    run.configure(probe_url=url)
    proc = run("m10-canary", "--verbose")
    assert proc.returncode == 0, proc.stderr


SCENARIOS: dict[str, Callable[[Run], None]] = {
    "rollback-acts": _acts,
    "rollback-fails": _fails,
    "rollback-dry-run": _dry_run,
    "config-error": _config_error,
    "config-check": _config_check,
    "db-unreachable": _unreachable,
}


def _leaks(run: Run, conn_dsn: str) -> list[str]:
    """Every place that holds a secret form: outputs, files under the test's dirs (but
    the config file, which must hold them), the rollback ledger."""
    texts = {f"output {i}": t for i, t in enumerate(run.outputs)}
    for path in run.tmp.rglob("*"):
        if path.is_file() and path.name != "secret.toml":
            texts[str(path)] = path.read_text(errors="replace")
    with psycopg.connect(conn_dsn) as c:
        rows = c.execute("SELECT * FROM m10_recovery.rollback_actions").fetchall()
    texts["rollback_actions"] = repr(rows)
    return [f"{form!r} in {where}" for where, t in texts.items() for form in FORMS if form in t]


def _run(env: dict[str, str], tmp_path: Path, cli: Any, form: str) -> Run:
    env = {
        **env,
        "M10_DATABASE_URL": dsn_form(env["M10_DATABASE_URL"], form),
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_SESSION_TOKEN": AWS_SESSION,
        "APP_DEPLOY_HANDLE": PASSED,
        "M10_HOSTNAME": "host-a",
    }
    env["APP_DATABASE_URL"] = env["M10_DATABASE_URL"]
    run = Run(env, tmp_path, cli, [])
    run.configure()
    return run


# Every scenario with a URI; the other DSN forms where the DSN is used or shown.
CASES = [(s, "uri") for s in SCENARIOS] + [
    (s, form) for s in ("rollback-acts", "config-check") for form in ("multihost", "conninfo")
]


@pytest.mark.parametrize(("scenario", "form"), CASES)
def test_no_secret_in_any_output(
    env: dict[str, str], dsn: str, tmp_path: Path, cli: Any, scenario: str, form: str
) -> None:
    run = _run(env, tmp_path, cli, form)
    SCENARIOS[scenario](run)
    assert not _leaks(run, dsn)


def test_no_secret_from_a_probe_url(
    env: dict[str, str],
    dsn: str,
    tmp_path: Path,
    cli: Any,
    endpoint: Endpoint,  # noqa: F811
) -> None:
    """A probe URL's password and token stay out of the canary's logs and reports."""
    u = urlsplit(endpoint.url)
    url = f"http://probe:{PROBE_PW}@{u.netloc}{u.path}?api_token={PROBE_TOKEN}"
    run = _run(env, tmp_path, cli, "uri")
    _canary(run, url)
    assert list(run.tmp.rglob("latest_report.json"))
    assert not _leaks(run, dsn)
