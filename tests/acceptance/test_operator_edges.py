"""Small operator edges, as real processes: a reader that stops early, a reversed date range,
a read-only log directory, an option missing its value, and errors naming the real command."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import psycopg
import pytest
from click.testing import CliRunner

from m10jobs.cli.admin import main
from m10jobs.cli.jobcommand import job_command
from m10jobs.registry import jobs
from tests.conftest import BIN
from tests.stats_support import seed_day


def closed_reader(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run argv with its stdout a pipe whose reader has already gone (`| head` that
    stopped): (exit status, stderr)."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    return proc.wait(timeout=60), err


@pytest.mark.parametrize("args", [["locks", "list"], ["jobs"], ["flows"], ["config", "check"]])
def test_admin_output_into_a_closed_pipe_ends_quietly(
    env: dict[str, str], conn: Any, args: list[str]
) -> None:
    conn.execute("SELECT m10_recovery.acquire_lock('demo:lock', 'someone', 300)")
    code, err = closed_reader([str(BIN / "m10"), *args], env)
    assert code == -signal.SIGPIPE, err  # as git: the shell sees 141
    assert "failed" not in err and "Traceback" not in err and "BrokenPipe" not in err


def test_an_admin_failure_names_the_real_command(env: dict[str, str], conn: Any) -> None:
    """An unexpected error (here: a login without the m10_ops grants) is labelled with the
    command that failed, group included."""
    conn.execute("CREATE ROLE m10_nobody LOGIN")
    # past the release gate (which reads schema_migrations), then denied the lease table
    conn.execute("GRANT USAGE ON SCHEMA m10_recovery TO m10_nobody")
    conn.execute("GRANT SELECT ON m10_recovery.schema_migrations TO m10_nobody")
    url = psycopg.conninfo.make_conninfo(env["M10_DATABASE_URL"], user="m10_nobody")
    proc = subprocess.run(
        [str(BIN / "m10"), "locks", "list", "--database-url", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "m10 locks list failed:" in proc.stderr, proc.stderr
    assert "m10 list failed" not in proc.stderr


def test_reversed_stats_range_is_a_usage_error(env: dict[str, str], conn: Any) -> None:
    for args in (
        ["--start-date", "2026-12-05", "--until", "2026-12-01"],
        ["--until", "2026-12-01", "--start-date", "2026-12-05"],
    ):
        proc = subprocess.run(
            [str(BIN / "m10-daily-stats"), *args], env=env, capture_output=True, text=True
        )
        assert proc.returncode == 2, proc.stderr
        assert "Usage: m10-daily-stats" in proc.stderr
        assert "--start-date 2026-12-05 is after --until 2026-12-01" in proc.stderr
    assert conn.execute("SELECT count(*) AS n FROM m10_recovery.daily_stats").fetchone()["n"] == 0


def _commands() -> Iterator[tuple[list[str], click.Command]]:
    """Every `m10 ...` leaf command (by its argv) and every job script's command."""

    def walk(cmd: click.Command, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is not None:
                    yield from walk(sub, [*path, name])
        else:
            yield path, cmd

    yield from walk(main, [])
    for job in jobs():
        yield [job.script], job_command(job)


def test_every_option_missing_its_value_shows_the_usage_line() -> None:
    runner = CliRunner()
    checked = 0
    for path, cmd in _commands():
        option = next(
            (
                p
                for p in cmd.params
                if isinstance(p, click.Option) and not p.is_flag and p.nargs == 1
            ),
            None,
        )
        if option is None:
            continue
        argv = path[1:] if path and path[0].startswith(("m10-", "aos-")) else path
        target = cmd if path and path[0].startswith(("m10-", "aos-")) else main
        result = runner.invoke(target, [*argv, option.opts[0]], prog_name=path[0])
        assert result.exit_code == 2, (path, result.output)
        assert "Usage:" in result.stderr and "requires an argument" in result.stderr, path
        checked += 1
    assert checked > 20


def test_units_render_output_without_value_shows_usage_as_a_process(env: dict[str, str]) -> None:
    proc = subprocess.run(
        [str(BIN / "m10"), "units", "render", "--output"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == "Usage: m10 units render [OPTIONS]"
    assert proc.stderr.strip().endswith("Error: Option '--output' requires an argument.")


@pytest.fixture
def unprivileged(env: dict[str, str]) -> Iterator[tuple[Path, list[str]]]:
    """A 0755 base dir for the job's state/log/metrics dirs, and the argv prefix that runs
    a job as an unprivileged user (as root: `nobody` through setpriv; root writes anywhere)."""
    base = Path(tempfile.mkdtemp(prefix="m10ro-"))
    base.chmod(0o755)
    for d in ("state", "log", "metrics"):
        (base / d).mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for d in (base, *base.iterdir()):
            os.chown(d, nobody.pw_uid, nobody.pw_gid)
        prefix = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}"]
        prefix.append("--clear-groups")
    env.update(
        M10_STATE_DIR=str(base / "state"),
        M10_LOG_DIR=str(base / "log"),
        M10_METRICS_DIR=str(base / "metrics"),
    )
    try:
        yield base, prefix
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_read_only_log_dir_is_the_one_cannot_write_answer(
    env: dict[str, str],
    conn: Any,
    unprivileged: tuple[Path, list[str]],
    request: pytest.FixtureRequest,
) -> None:
    base, prefix = unprivileged
    # as nobody, from a venv it can reach (a checkout in a 0700 directory keeps it out)
    bin_dir = request.getfixturevalue("nobody_bin") if prefix else BIN
    yesterday = conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date - 1 AS d").fetchone()["d"]
    seed_day(conn, yesterday, 3)
    (base / "log").chmod(0o555)
    proc = subprocess.run(
        [*prefix, str(bin_dir / "m10-daily-stats")], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1, proc.stderr
    lock = base / "log" / ".m10jobs.lock"
    assert f"cannot write {lock}: Permission denied; give the jobs' user" in proc.stderr
    assert "rerun with --verbose" not in proc.stderr and "Traceback" not in proc.stderr
    assert "OSError" not in proc.stderr and "PermissionError" not in proc.stderr
    assert list((base / "log").iterdir()) == []
    # The figures were computed all the same (cluster state); the export follows once fixed.
    (base / "log").chmod(0o755)
    again = subprocess.run(
        [*prefix, str(bin_dir / "m10-daily-stats")], env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert (base / "log" / f"m10_stats_{yesterday:%Y-%m}.csv").exists()
