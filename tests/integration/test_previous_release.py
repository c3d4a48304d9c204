"""The previous release's jobs against this release's schema (expand/contract, issue 22):
while hosts are upgraded one by one, hosts still on the previous release keep running after
`m10 db migrate`.  Its code comes from git history (m10jobs.release.PREVIOUS.commit), run with
this venv's dependencies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from m10jobs.release import PREVIOUS
from tests.outbox_support import enqueue
from tests.release_support import extract, history_missing

ENTRY = "from m10jobs.cli.entry import {fn}; {fn}()"
JOBS = ("m10-outbox-processor", "m10-maintenance", "m10-daily-stats")


@pytest.fixture(scope="module")
def previous_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = history_missing()
    if why:
        pytest.skip(why)
    return extract(PREVIOUS, tmp_path_factory.mktemp("previous"))


def run_previous(tree: Path, script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = ENTRY.format(fn=script.replace("-", "_"))
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PYTHONPATH": str(tree)},
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_previous_release_code_is_what_runs(previous_tree: Path, env: dict[str, str]) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import m10jobs; print(m10jobs.__file__, m10jobs.__version__)"],
        env={**env, "PYTHONPATH": str(previous_tree)},
        cwd=previous_tree,
        capture_output=True,
        text=True,
        check=True,
    )
    path, version = probe.stdout.split()
    assert Path(path).is_relative_to(previous_tree) and version == PREVIOUS.version
    newest = max(p.name[:3] for p in (previous_tree / "sql" / "migrations").glob("*.sql"))
    assert newest == PREVIOUS.newest_migration


def test_previous_release_jobs_run_on_the_new_schema(
    previous_tree: Path, dsn: str, env: dict[str, str], redis_url: str
) -> None:
    """dsn is migrated with this release's migrations (conftest)."""
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        ids = enqueue(c, 20)
    for script in JOBS:
        r = run_previous(previous_tree, script, env)
        assert r.returncode in (0, 75), (script, r.returncode, r.stderr[-1500:])
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        assert summary["exit_code"] in (0, 75), (script, summary)
    with psycopg.connect(dsn, row_factory=dict_row) as c:
        statuses = c.execute(
            "SELECT status FROM m10_recovery.outbox WHERE id = ANY(%s)", (ids,)
        ).fetchall()
        days = c.execute("SELECT count(*) AS n FROM m10_recovery.daily_stats").fetchone()["n"]
    assert {r["status"] for r in statuses} == {"published"}, statuses
    assert days >= 1
    assert list(Path(env["M10_LOG_DIR"]).glob("m10_stats_*.csv"))
