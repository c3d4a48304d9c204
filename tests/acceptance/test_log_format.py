"""Readable hand runs: text log lines on a terminal (JSON for the journal, pipes and files),
`--log-format json|text` on every script (flag > M10_LOG_FORMAT > the terminal test), and
each task's text "done" line carrying its figures."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from m10jobs.registry import jobs

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("job", jobs(), ids=lambda j: j.script)
def test_every_script_declares_log_format(job: Any) -> None:
    out = subprocess.run(
        [str(BIN / job.script), "--help"], capture_output=True, text=True, timeout=60
    )
    assert "--log-format" in out.stdout and "M10_LOG_FORMAT" in out.stdout


def test_m10_commands_take_log_format_too() -> None:
    out = subprocess.run(
        [str(BIN / "m10"), "locks", "list", "--help"], capture_output=True, text=True, timeout=60
    )
    assert "--log-format" in out.stdout


def test_text_done_lines_carry_the_figures(cli: Any, env: dict[str, str]) -> None:
    p = cli("m10-maintenance", "--log-format", "text")
    assert p.returncode == 0, p.stderr
    done = [ln for ln in p.stderr.splitlines() if " done: " in ln]
    assert {ln.split(" done: ")[0].removeprefix("info: ") for ln in done} >= {
        "reclaim_gc",
        "dl_reconcile",
    }
    assert any("reclaimed=0" in ln for ln in done), done
    assert not any(ln.startswith("{") for ln in p.stderr.splitlines())


def test_the_flag_beats_the_environment(cli: Any, env: dict[str, str]) -> None:
    p = cli(
        "m10-maintenance",
        "--dry-run",
        "--log-format",
        "json",
        env={**env, "M10_LOG_FORMAT": "text"},
    )
    assert p.returncode == 0, p.stderr
    assert all(json.loads(ln)["level"] for ln in p.stderr.splitlines() if ln.strip())
    bad = cli("m10-maintenance", "--dry-run", "--log-format", "yaml")
    assert bad.returncode == 78 and "--log-format" in bad.stderr and "json or text" in bad.stderr


def _on_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal (stdout a pipe); what the terminal showed."""
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    p.stdout.read()  # type: ignore[union-attr]
    return p.wait(timeout=60), seen.decode(errors="replace")


def test_a_terminal_gets_text_a_pipe_gets_json(env: dict[str, str]) -> None:
    plain = {k: v for k, v in env.items() if k != "M10_LOG_FORMAT"}
    argv = [str(BIN / "m10-maintenance"), "--dry-run"]
    code, shown = _on_a_terminal(argv, plain)
    assert code == 0, shown
    lines = [ln for ln in shown.splitlines() if ln.strip()]
    assert lines and all(ln.startswith(("info: ", "warning: ")) for ln in lines), lines
    piped = subprocess.run(argv, env=plain, capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0
    assert all(json.loads(ln) for ln in piped.stderr.splitlines() if ln.strip())
