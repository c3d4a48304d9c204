"""The canary report: its schema, paths, scoring and validation, shared by producer and consumer.

m10-canary builds a report here and m10-rollback validates it here, so the two
cannot drift apart.  A report the consumer does not fully understand (not
JSON, truncated, unknown schema_version, a field missing or of the wrong type)
is BadInput (exit 65): nothing is acted on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from m10jobs.edges import files
from m10jobs.errors import BadInput
from m10jobs.jobs.canary.settings import LATEST as LATEST

SCHEMA_VERSION = 1
KNOWN_SCHEMA_VERSIONS = frozenset({1})
VERDICTS = ("pass", "marginal", "fail", "inconclusive")
STATUSES = ("pass", "fail", "no_data")

Status = Literal["pass", "fail", "no_data"]
Verdict = Literal["pass", "marginal", "fail", "inconclusive"]


def reports_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "canary" / "reports"


def latest_path(state_dir: Path) -> Path:
    return reports_dir(state_dir) / LATEST


def history_path(state_dir: Path, run_id: str) -> Path:
    return reports_dir(state_dir) / f"{run_id}.json"


@dataclass(frozen=True)
class Thresholds:
    """Score cut-offs.  pass >= pass_score; marginal >= marginal_score; below: fail.
    Inconclusive when probes without data carry more than max_no_data_share of the weight."""

    pass_score: float = 0.9
    marginal_score: float = 0.6
    max_no_data_share: float = 0.5


@dataclass(frozen=True)
class ProbeResult:
    name: str
    type: str
    status: Status
    value: float | None
    threshold: float | None
    weight: float
    critical: bool
    detail: str
    duration_ms: float


def score_and_verdict(
    results: list[ProbeResult], t: Thresholds
) -> tuple[float | None, Verdict, str]:
    """(score, verdict, reason).

    Score is the weighted share of passes among the probes that produced data.
    A failed critical probe makes the run fail whatever the score; a critical
    probe without data, or too much weight without data, makes it inconclusive
    (we cannot tell, so rollback must not act).
    """
    total = sum(r.weight for r in results)
    measured = [r for r in results if r.status != "no_data"]
    measured_weight = sum(r.weight for r in measured)
    passed = sum(r.weight for r in measured if r.status == "pass")
    score = round(passed / measured_weight, 4) if measured_weight > 0 else None
    critical_failed = [r.name for r in results if r.critical and r.status == "fail"]
    if critical_failed:
        return score, "fail", f"critical probe(s) failed: {', '.join(critical_failed)}"
    critical_blind = [r.name for r in results if r.critical and r.status == "no_data"]
    if critical_blind:
        return score, "inconclusive", f"critical probe(s) without data: {', '.join(critical_blind)}"
    no_data_share = (total - measured_weight) / total if total > 0 else 1.0
    if score is None or no_data_share > t.max_no_data_share:
        return (
            score,
            "inconclusive",
            (
                f"probes without data carry {no_data_share:.0%} of the "
                f"weight (max {t.max_no_data_share:.0%})"
            ),
        )
    if score >= t.pass_score:
        return score, "pass", f"score {score:.2f} >= pass threshold {t.pass_score:.2f}"
    if score >= t.marginal_score:
        return (
            score,
            "marginal",
            (
                f"score {score:.2f} below pass threshold {t.pass_score:.2f}, "
                f">= marginal threshold {t.marginal_score:.2f}"
            ),
        )
    return score, "fail", f"score {score:.2f} below marginal threshold {t.marginal_score:.2f}"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def build(
    *,
    run_id: str,
    target: str,
    host: str,
    started: float,
    finished: float,
    results: list[ProbeResult],
    thresholds: Thresholds,
) -> dict[str, Any]:
    score, verdict, reason = score_and_verdict(results, thresholds)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "target": target,
        "host": host,
        "started_at": iso(started),
        "finished_at": iso(finished),
        "verdict": verdict,
        "reason": reason,
        "score": score,
        "thresholds": {
            "pass": thresholds.pass_score,
            "marginal": thresholds.marginal_score,
            "max_no_data_share": thresholds.max_no_data_share,
        },
        "counts": {s: sum(1 for r in results if r.status == s) for s in STATUSES},
        "probes": [asdict(r) for r in results],
    }


@dataclass(frozen=True)
class Report:
    """The parts of a validated report the consumer decides on."""

    path: Path
    schema_version: int
    run_id: str
    verdict: Verdict
    score: float | None
    finished_at: datetime
    raw: dict[str, Any]


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _bad(path: Path, what: str) -> BadInput:
    return BadInput(
        f"canary report {path} {what}; nothing was acted on. Rerun m10-canary to "
        "write a fresh report (or move the bad file aside)"
    )


def parse(path: Path, data: bytes) -> Report:
    """Validate a report's bytes; BadInput (exit 65) for anything not fully understood."""
    obj = files.parse_json(path, files.CANARY_REPORT, data)
    if not isinstance(obj, dict):
        raise _bad(path, "is not a JSON object")
    version = obj.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _bad(path, f"has no integer schema_version (got {version!r})")
    if version not in KNOWN_SCHEMA_VERSIONS:
        raise _bad(
            path,
            f"has schema_version {version}, this m10jobs knows "
            f"{sorted(KNOWN_SCHEMA_VERSIONS)}; upgrade m10jobs on this host",
        )
    run_id = obj.get("run_id")
    if not isinstance(run_id, str) or not run_id or not run_id.isalnum():
        raise _bad(path, f"has an invalid run_id {run_id!r}")
    verdict = obj.get("verdict")
    if verdict not in VERDICTS:
        raise _bad(
            path, f"has an unknown verdict {verdict!r} (expected one of {', '.join(VERDICTS)})"
        )
    score = obj.get("score")
    if score is not None and not (_number(score) and 0 <= score <= 1):
        raise _bad(path, f"has an invalid score {score!r}")
    for key in ("started_at", "finished_at"):
        if not isinstance(obj.get(key), str):
            raise _bad(path, f"has no {key} timestamp")
    try:
        finished = datetime.fromisoformat(obj["finished_at"])
        datetime.fromisoformat(obj["started_at"])
    except ValueError:
        raise _bad(path, "has a timestamp that is not ISO 8601") from None
    if finished.tzinfo is None:
        raise _bad(path, "has a finished_at without a time zone")
    probes = obj.get("probes")
    if not isinstance(probes, list) or not all(
        isinstance(p, dict) and isinstance(p.get("name"), str) and p.get("status") in STATUSES
        for p in probes
    ):
        raise _bad(path, "has a missing or malformed probes list")
    return Report(path, version, run_id, verdict, score, finished, obj)


def load(path: Path) -> Report | None:
    """The report at path, validated; None when there is none yet."""
    data = files.read_bytes(path, files.CANARY_REPORT, missing_ok=True)
    return None if data is None else parse(path, data)
