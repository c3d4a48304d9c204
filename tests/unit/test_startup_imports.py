"""What start-up loads, so the win benchmarked by benchmarks/bench_startup.py does not
silently regress: --help of every script loads no client (psycopg, redis, boto3), no
edge, runner or logging module, no TOML parser; m10-maintenance's --help builds none of
its settings tables.  Each case runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from m10jobs.registry import jobs

CLIENTS = {"psycopg", "psycopg_binary", "redis", "boto3", "botocore"}
OURS_LATER = {"m10jobs.runner", "m10jobs.logs", "m10jobs.edges", "m10jobs.cli.service_identity"}
STDLIB_LATER = {"tomllib", "pythonjsonlogger", "ctypes", "asyncio"}


def _loaded(code: str) -> set[str]:
    """Every module loaded by `code` (run in a fresh interpreter), top packages included."""
    code += "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def _help(script: str) -> str:
    attr = script.replace("-", "_")
    return (
        f"from m10jobs.cli.entry import {attr} as c\n"
        "try:\n    c(['--help'])\nexcept SystemExit:\n    pass"
    )


def test_importing_the_cli_loads_no_client() -> None:
    loaded = _loaded("import m10jobs.cli, m10jobs.cli.entry, m10jobs.cli.jobcommand")
    assert not loaded & (CLIENTS | OURS_LATER | STDLIB_LATER)


@pytest.mark.parametrize("script", [j.script for j in jobs()])
def test_help_loads_only_the_declaration(script: str) -> None:
    loaded = _loaded(_help(script))
    assert not loaded & (CLIENTS | OURS_LATER | STDLIB_LATER)


def test_maintenance_help_builds_no_settings_table() -> None:
    # its tables and the matview key function are named as strings in the declaration
    loaded = _loaded(_help("m10-maintenance"))
    assert "m10jobs.jobs.maintenance" in loaded
    assert "m10jobs.jobs.maintenance.settings" not in loaded
