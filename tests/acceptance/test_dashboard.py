"""The Grafana dashboard that ships (monitoring/m10jobs.dashboard.json): valid JSON, every
panel's query parses (promtool, through a throwaway rules file) and names only metrics some
job writes, and it covers what an operator looks for."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "monitoring" / "m10jobs.dashboard.json"
RULES = ROOT / "monitoring" / "m10jobs.rules.yml"


def queries() -> list[tuple[str, str]]:
    model = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in model["panels"] for t in p["targets"]]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_every_panel_query_parses(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:q{i}", "expr": e} for i, (_, e) in enumerate(queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    r = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_panels_name_only_metrics_the_jobs_write() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "m10jobs").rglob("*.py"))
    for title, expr in queries():
        names = set(re.findall(r"\b((?:m10|aos)_[a-z_]+)\b", expr))
        assert names, (title, expr)
        for metric in names:
            assert f'"{metric}"' in source, (title, metric)


def test_it_shows_what_an_operator_looks_for() -> None:
    exprs = "\n".join(e for _, e in queries())
    for metric in (
        "m10_job_last_success_timestamp_seconds",
        "m10_job_last_exit_code",
        "m10_job_duration_seconds",
        "m10_outbox_backlog",
        "m10_outbox_oldest_pending_age_seconds",
        "m10_dead_letters_abandoned",
        "m10_lease_held_seconds",
        "m10_retention_rows_deleted",
        "m10_canary_verdict",
        "aos_cost_last_period_end_timestamp_seconds",
        "aos_cost_backfill_skipped_periods",
    ):
        assert metric in exprs, metric
    # installed beside the rules
    assert "monitoring/*.json" in (ROOT / "Makefile").read_text()
    assert RULES.exists()
