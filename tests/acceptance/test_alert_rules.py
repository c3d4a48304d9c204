"""The alert rules that ship (monitoring/m10jobs.rules.yml): promtool accepts them, their
unit tests (monitoring/tests/*.yml) pass, every alert is tested firing and silent, links
a runbook section that exists, and reads only metrics some job writes."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "m10jobs.rules.yml"
TESTS = sorted((ROOT / "monitoring" / "tests").glob("*.yml"))
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)"
)


def alerts() -> list[dict[str, Any]]:
    return [
        r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r
    ]


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    r = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    assert TESTS
    r = subprocess.run(
        ["promtool", "test", "rules", *map(str, TESTS)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for t in case.get("alert_rule_test", []):
                (firing if t.get("exp_alerts") else silent).add(t["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent"


def test_every_alert_links_a_runbook_section() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    for a in alerts():
        url = a["annotations"]["runbook_url"]
        anchor = url.rsplit("#", 1)[1]
        assert url.startswith("file:///opt/m10jobs/share/doc/m10jobs/runbook.md#"), url
        assert f'<a id="{anchor}"></a>' in runbook, (a["alert"], anchor)


def test_rules_read_only_metrics_the_jobs_write() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "m10jobs").rglob("*.py"))
    for a in alerts():
        for metric in set(re.findall(r"\b((?:m10|aos)_[a-z_]+)\b", a["expr"])):
            assert f'"{metric}"' in source, (a["alert"], metric)


def not_succeeding_threshold(interval: int, jitter: int, timeout: int) -> int:
    """Two missed runs plus the third's jitter and timeout, at least 15 min, in whole minutes
    (the formula the rule's comment states)."""
    return math.ceil(max(900, 2 * interval + jitter + timeout) / 60) * 60


def test_not_succeeding_covers_every_registered_job_once() -> None:
    """A job added to the registry, or a changed schedule or timeout, must change its
    staleness threshold here: the thresholds are the registry's, exactly."""
    from m10jobs.health.runs import schedule_seconds
    from m10jobs.registry import jobs

    rule = next(a for a in alerts() if a["alert"] == "M10JobNotSucceeding")
    branches = re.findall(r'\{job=~?"([^"]+)"\}\) > (\d+)\)', rule["expr"])
    seen: dict[str, int] = {}
    for pattern, threshold in branches:
        for name in pattern.split("|"):
            assert name not in seen, f"{name} is in two branches"
            seen[name] = int(threshold)
    for job in jobs():
        assert job.script in seen, f"{job.script} has no M10JobNotSucceeding threshold"
        want = not_succeeding_threshold(
            schedule_seconds(job.schedule), job.jitter_seconds, job.timeout_seconds
        )
        assert seen[job.script] == want, (job.script, seen[job.script], want)
    assert set(seen) == {j.script for j in jobs()}


def test_cluster_gauges_are_read_from_the_newest_real_run() -> None:
    """A host that lost a cluster lease keeps its old gauges: the rules over cluster-wide
    state must not read them (the canary: newest report; others: m10:job_newest_real_run)."""
    from m10jobs.registry import jobs

    cluster = {j.script for j in jobs() if j.scope == "cluster"}
    by_name = {a["alert"]: a["expr"] for a in alerts()}
    for name in (
        "AosCostBadPeriods",
        "M10SyntheticStalled",
        "M10RedisNotPrimary",
        "M10RedisNotDurable",
        "M10OutboxRepublished",
    ):
        assert "m10:job_newest_real_run" in by_name[name], name
    assert "max(m10_canary_report_timestamp_seconds)" in by_name["M10CanaryFailing"]
    assert "max(m10_canary_report_timestamp_seconds)" in by_name["M10CanaryReportStale"]
    assert {"m10-canary", "m10-synthetic-traffic", "m10-outbox-processor"} <= cluster
