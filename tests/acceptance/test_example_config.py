"""The example config that `make install` ships is valid for every job."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from m10jobs.registry import jobs

EXAMPLE = Path(__file__).resolve().parents[2] / "systemd" / "m10jobs.toml.example"


def test_example_parses_and_keeps_secrets_out() -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    assert "database_url" not in data  # credentials live in /etc/m10jobs/env


@pytest.mark.parametrize("script", [j.script for j in jobs()])
def test_every_job_accepts_the_example(cli: Any, script: str) -> None:
    p = cli(script, "--config", str(EXAMPLE), "--dry-run")
    assert p.returncode != 78, p.stderr[-2000:]
    if script == "m10-rollback":  # deliberately unset: what to run is the site's decision
        assert p.returncode == 0 and "rollback.command is not configured" in p.stderr
    assert json.loads(p.stdout.splitlines()[-1])["dry_run"] is True
