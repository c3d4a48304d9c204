"""How jobs behave on an installed host, short of booting systemd (tests/system/ does):
hand runs as root take the units' environment and identity, error lines carry their
journald priority, and no run leaves a file behind per artifact."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pytest

from m10jobs import runner
from m10jobs.config import load_config
from m10jobs.edges.fallback import retry_local_fallback
from m10jobs.edges.files import DIR_LOCK_NAME
from m10jobs.registry import by_script
from tests.conftest import BIN
from tests.stats_support import seed_day

CANARY_CONFIG = """
[canary]
history_keep = 5
[[canary.probes]]
name = "backlog"
type = "outbox_backlog"
max_pending = 1000
"""


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory another account can traverse (pytest's tmp is 0700 root)."""
    base = Path(tempfile.mkdtemp(prefix="m10-host-"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def hand_run_env(env: dict[str, str], **extra: str) -> dict[str, str]:
    """The environment of an operator's root shell: not started by systemd."""
    clean = {
        k: v
        for k, v in env.items()
        if not k.startswith("M10_") and k not in ("INVOCATION_ID", "JOURNAL_STREAM")
    }
    return {**clean, **extra}


def _readable_by_others(path: str) -> bool:
    """Can an unprivileged account reach this interpreter (a pyenv under /root cannot)?"""
    parts = Path(path).resolve().parents
    return all(p.stat().st_mode & 0o001 for p in parts if p != Path("/"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the hand run drops privileges")
@pytest.mark.skipif(
    not _readable_by_others(sys.base_prefix + "/lib"),
    reason="this Python lives where the nobody account cannot read it (a "
    "user-local pyenv); tests/system proves the hand run on an installed "
    "host, whose venv is built from /usr/bin/python3",
)
def test_hand_run_as_root_reads_env_file_and_runs_as_the_service_user(
    env: dict[str, str], open_dir: Path
) -> None:
    nobody = pwd.getpwnam("nobody")
    state, log = open_dir / "state", open_dir / "log"
    config = open_dir / "m10jobs.toml"
    config.write_text(CANARY_CONFIG)
    env_file = open_dir / "env"
    env_file.write_text(
        "# the units' EnvironmentFile\n"
        f"M10_DATABASE_URL='{env['M10_DATABASE_URL']}'\n"
        f"M10_STATE_DIR={state}\n"
        "M10_LOG_DIR=/nonexistent/overridden-by-the-operator\n"
    )
    env_file.chmod(0o600)  # like /etc/m10jobs/env: root reads it before dropping
    proc = subprocess.run(
        [str(BIN / "m10"), "run", "m10-canary", "--config", str(config)],
        env=hand_run_env(
            env, M10_ENV_FILE=str(env_file), M10_SERVICE_USER="nobody", M10_LOG_DIR=str(log)
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    report = state / "canary" / "reports" / "latest_report.json"
    assert json.loads(report.read_text())["verdict"] == "pass"
    made = [state, log, *state.rglob("*")]
    owners = {p: (p.stat().st_uid, p.stat().st_gid) for p in made}
    assert set(owners.values()) == {(nobody.pw_uid, nobody.pw_gid)}, owners
    assert not list(log.iterdir())  # the operator's M10_LOG_DIR won over the file's


def test_without_the_service_user_a_hand_run_stays_who_it_is(
    env: dict[str, str], open_dir: Path
) -> None:
    config = open_dir / "m10jobs.toml"
    config.write_text(CANARY_CONFIG)
    proc = subprocess.run(
        [str(BIN / "m10-canary"), "--config", str(config)],
        env=hand_run_env(
            env,
            M10_SERVICE_USER="no-such-user-m10",
            M10_ENV_FILE="/nonexistent",
            M10_DATABASE_URL=env["M10_DATABASE_URL"],
            M10_STATE_DIR=str(open_dir / "state"),
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (open_dir / "state").stat().st_uid == os.geteuid()


def run_with_stderr_file(
    env: dict[str, str], path: Path, journal: str | None, *args: str
) -> list[str]:
    with path.open("wb") as err:
        st = os.fstat(err.fileno())
        stream = {"JOURNAL_STREAM": journal if journal is not None else f"{st.st_dev}:{st.st_ino}"}
        subprocess.run(
            [str(BIN / "m10-canary"), *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**hand_run_env(env), **stream},
            timeout=60,
            check=False,
        )
    return path.read_text().splitlines()


def test_error_lines_carry_journald_priority_when_stderr_is_the_journal(
    env: dict[str, str], tmp_path: Path
) -> None:
    # no database configured: one error line, exit 78
    lines = run_with_stderr_file(env, tmp_path / "err", None)
    assert lines and all(line.startswith("<") for line in lines), lines
    errors = [line for line in lines if line.startswith("<3>")]
    assert errors, lines
    record = json.loads(errors[0].removeprefix("<3>"))  # still one JSON object
    assert record["level"] == "ERROR" and "database_url" in record["message"]


def test_no_priority_prefix_when_stderr_is_not_the_journal(
    env: dict[str, str], tmp_path: Path
) -> None:
    # JOURNAL_STREAM inherited from a parent whose stderr was the journal: not ours
    lines = run_with_stderr_file(env, tmp_path / "err", "1:1")
    assert lines and all(line.startswith("{") for line in lines), lines


def files_by_dir(root: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in root.rglob("*"):
        if path.is_file():
            key = str(path.parent.relative_to(root))
            counts[key] = counts.get(key, 0) + 1
    return counts


def test_hundred_runs_leave_a_bounded_number_of_files(
    s3_env: dict[str, str], conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file-writing job, 100 passes each: no lock or temp file per artifact;
    each directory holds what retention keeps (canary history_keep), no more."""
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    config = tmp_path / "m10jobs.toml"
    config.write_text(CANARY_CONFIG)
    boto3.client(
        "s3", endpoint_url=s3_env["M10_R2_ENDPOINT_URL"], region_name="us-east-1"
    ).create_bucket(Bucket=s3_env["M10_R2_BUCKET"])
    seed_day(conn, date(2026, 10, 30), 3)
    cfg = load_config(str(config))
    for i in range(3):  # three pending fallback uploads for the retry job
        retry_local_fallback(
            cfg,
            f"payload {i}".encode(),
            f"f{i}.txt",
            cfg.require("r2_bucket"),
            f"k/f{i}.txt",
            "text/plain",
            "test: store was down",
        )
    root = Path(s3_env["M10_STATE_DIR"]).parent
    jobs = [
        ("m10-canary", {}),
        ("m10-retry-r2-fallbacks", {}),
        ("m10-daily-stats", {"start_date": date(2026, 10, 30), "until": date(2026, 10, 30)}),
    ]
    after_ten: dict[str, int] = {}
    for n in range(1, 101):
        for script, params in jobs:
            code = runner.run(by_script(script), config_file=str(config), params=params)
            assert code == 0, (script, n)
        if n == 10:
            after_ten = files_by_dir(root)
    counts = files_by_dir(root)
    assert counts == after_ten  # nothing grows with the number of runs
    reports = root / "state" / "canary" / "reports"
    assert len(list(reports.glob("*.json"))) == 5 + 1  # history_keep copies + latest
    locks = [p for p in root.rglob("*.lock")]
    assert all(p.name == DIR_LOCK_NAME for p in locks), locks
    assert len(locks) == len({p.parent for p in locks})  # at most one per directory
    assert not list(root.rglob("*.tmp"))
