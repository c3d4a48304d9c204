"""The report schema shared by m10-canary and m10-rollback: scoring, verdicts, validation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from m10jobs.errors import BadInput
from m10jobs.jobs.canary import report as cr

T = cr.Thresholds(pass_score=0.9, marginal_score=0.6, max_no_data_share=0.5)


def r(status: str, weight: float = 1, critical: bool = False, name: str = "") -> cr.ProbeResult:
    return cr.ProbeResult(
        name or f"{status}{weight}{critical}",
        "sql",
        status,  # type: ignore[arg-type]
        None,
        None,
        weight,
        critical,
        "",
        0.0,
    )


@pytest.mark.parametrize(
    ("results", "score", "verdict"),
    [
        ([r("pass"), r("pass")], 1.0, "pass"),
        ([r("pass", 9), r("fail", 1)], 0.9, "pass"),
        ([r("pass", 3), r("fail", 1)], 0.75, "marginal"),
        ([r("pass", 6), r("fail", 4)], 0.6, "marginal"),
        ([r("pass", 1), r("fail", 1)], 0.5, "fail"),
        ([r("pass", 10), r("fail", 1, critical=True)], 0.9091, "fail"),
        ([r("pass", 10), r("no_data", 1, critical=True)], 1.0, "inconclusive"),
        ([r("pass", 1), r("no_data", 2)], 1.0, "inconclusive"),
        ([r("pass", 2), r("no_data", 2)], 1.0, "pass"),  # exactly the max share: still decided
        ([r("no_data"), r("no_data", 2)], None, "inconclusive"),
        ([r("fail", 1, critical=True), r("no_data", 5)], 0.0, "fail"),  # a known failure wins
        ([r("pass", 0), r("fail", 1)], 0.0, "fail"),
    ],
)
def test_score_and_verdict(
    results: list[cr.ProbeResult], score: float | None, verdict: str
) -> None:
    got_score, got_verdict, reason = cr.score_and_verdict(results, T)
    assert (got_score, got_verdict) == (score, verdict)
    assert reason


def good(**override: object) -> bytes:
    now = time.time()
    report = cr.build(
        run_id="abc123",
        target="t",
        host="h",
        started=now - 1,
        finished=now,
        results=[r("pass")],
        thresholds=T,
    )
    return json.dumps({**report, **override}).encode()


def test_a_built_report_parses_back() -> None:
    rep = cr.parse(Path("x"), good())
    assert rep.verdict == "pass" and rep.run_id == "abc123" and rep.schema_version == 1
    assert abs(rep.finished_at.timestamp() - time.time()) < 5


@pytest.mark.parametrize(
    "data",
    [
        good()[:-10],
        b"",
        b"null",
        good(schema_version=2),
        good(schema_version="1"),
        good(schema_version=True),
        good(run_id="../../etc"),
        good(run_id=""),
        good(verdict="FAIL"),
        good(score=1.5),
        good(score="0.5"),
        good(finished_at=None),
        good(finished_at="2026-01-01T00:00"),
        good(probes=[{"name": "a", "status": "maybe"}]),
    ],
)
def test_anything_not_fully_understood_is_bad_input(data: bytes) -> None:
    with pytest.raises(BadInput, match="nothing was acted on"):
        cr.parse(Path("latest_report.json"), data)


def test_missing_report_is_none(tmp_path: Path) -> None:
    assert cr.load(tmp_path / "nope.json") is None
