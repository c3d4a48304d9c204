"""The canary tables ([canary] with its probes, [rollback]).

Imported by the declarations in __init__, so it stays cheap: no driver imports.
PROBE_TYPES says which keys and threshold each probe type takes; the probes
themselves are in runner.py (PROBES).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

from m10jobs.flags import check_flags
from m10jobs.settings import setting

if TYPE_CHECKING:
    from m10jobs.jobs.canary import report as cr

LATEST = "latest_report.json"
"""The report m10-rollback acts on (beside the history), named here for the declaration."""

COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda v, t: v <= t,
    "<": lambda v, t: v < t,
    ">=": lambda v, t: v >= t,
    ">": lambda v, t: v > t,
    "==": lambda v, t: v == t,
}


COMMON_KEYS = frozenset({"name", "type", "weight", "critical", "timeout_s"})


@dataclass(frozen=True)
class Probe:
    name: str
    type: str
    weight: float
    critical: bool
    timeout_s: float
    threshold: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeType:
    threshold_key: str
    threshold_default: float | None
    keys: frozenset[str] = frozenset()


PROBE_TYPES: dict[str, ProbeType] = {
    "http": ProbeType("max_latency_ms", 1000.0, frozenset({"url", "expect_status", "use_proxy"})),
    "redis": ProbeType("max_latency_ms", 250.0, frozenset({"url"})),
    "sql": ProbeType("threshold", None, frozenset({"query", "compare"})),
    "outbox_backlog": ProbeType("max_pending", 1000.0),
    "outbox_oldest_age": ProbeType("max_age_s", 300.0),
    "dead_letter_rate": ProbeType("max_per_hour", 10.0, frozenset({"window_s"})),
}


def _probe_name(name: str) -> str | None:
    return "a name without '/'" if "/" in name else None


def _http_url(url: str) -> str | None:
    return None if url.startswith(("http://", "https://")) else "an http:// or https:// URL"


def _redis_url(url: str) -> str | None:
    return None if "://" in url else "a redis:// URL"


@dataclass(frozen=True)
class ProbeSettings:
    """A probe; which keys apply depends on its type (docs/canary.md)."""

    name: str = setting("", "unique probe name (required)", check=_probe_name)
    type: str = setting("", "probe type (required)", choices=tuple(PROBE_TYPES))
    weight: float = setting(1.0, "share of the score", min=0)
    critical: bool = setting(False, "a failure fails the verdict whatever the score")
    timeout_s: float = setting(5.0, "give up after this long", min=0.001, max=60)
    url: str | None = setting(
        None, "http: the URL (required); redis: default redis_url", secret=True
    )
    expect_status: int | None = setting(
        None, "http: expected status (default 200)", min=100, max=599
    )
    use_proxy: bool | None = setting(None, "http: honour *_proxy variables (default false)")
    query: str | None = setting(None, "sql: read-only query returning one number (required)")
    compare: str | None = setting(
        None, "sql: value <compare> threshold passes (default <=)", choices=tuple(COMPARE)
    )
    threshold: float | None = setting(None, "sql: the threshold (required)")
    window_s: int | None = setting(
        None, "dead_letter_rate: window (default 3600)", min=60, max=7 * 86400
    )
    max_latency_ms: float | None = setting(None, "http/redis: slower fails (1000/250)", min=0)
    max_pending: float | None = setting(None, "outbox_backlog: more fails (1000)", min=0)
    max_age_s: float | None = setting(None, "outbox_oldest_age: older fails (300)", min=0)
    max_per_hour: float | None = setting(None, "dead_letter_rate: more fails (10)", min=0)

    def problems(self) -> Iterator[str]:
        if not self.name:
            yield "name: is missing; every probe needs a name"
        if self.type not in PROBE_TYPES:
            yield f"type: is missing; one of {', '.join(PROBE_TYPES)}"
            return
        pt = PROBE_TYPES[self.type]
        allowed = COMMON_KEYS | pt.keys | {pt.threshold_key}
        for f in fields(ProbeSettings):
            if f.name not in allowed and getattr(self, f.name) is not None:
                yield f"{f.name}: not a key of a {self.type} probe (docs/canary.md)"
        if pt.threshold_default is None and getattr(self, pt.threshold_key) is None:
            yield f"{pt.threshold_key}: is missing; a {self.type} probe needs one"
        if self.type == "http" and self.url is None:
            yield "url: is missing; an http probe needs one"
        if self.type == "http" and self.url and (e := _http_url(self.url)):
            yield f"url: expected {e}"
        if self.type == "redis" and self.url and (e := _redis_url(self.url)):
            yield f"url: expected {e}"
        if self.type == "sql" and not self.query:
            yield "query: is missing; a sql probe needs one"

    def probe(self) -> Probe:
        """The runtime probe, each type's defaults filled in."""
        pt = PROBE_TYPES[self.type]
        threshold = getattr(self, pt.threshold_key)
        by_type: dict[str, dict[str, Any]] = {
            "http": {
                "url": self.url,
                "expect_status": self.expect_status or 200,
                "use_proxy": bool(self.use_proxy),
            },
            "redis": {"url": self.url or ""},
            "sql": {"query": self.query, "compare": self.compare or "<="},
            "dead_letter_rate": {"window_s": self.window_s or 3600},
        }
        extra = by_type.get(self.type, {})
        return Probe(
            self.name,
            self.type,
            self.weight,
            self.critical,
            self.timeout_s,
            pt.threshold_default if threshold is None else threshold,
            extra,
        )


@dataclass(frozen=True)
class CanarySettings:
    """[canary]: the probes and how their results become a verdict."""

    SECTION: ClassVar[str] = "canary"

    target: str = setting("default", "what the report is about (a deployment name)")
    pass_threshold: float = setting(0.9, "score at or above: pass", min=0, max=1)
    marginal_threshold: float = setting(
        0.6, "score at or above: marginal (below: fail)", min=0, max=1
    )
    max_no_data_share: float = setting(0.5, "more probes without data: inconclusive", min=0, max=1)
    history_keep: int = setting(200, "history copies of the report kept (0: all)", min=0)
    probes: tuple[ProbeSettings, ...] = setting(
        (),
        "the probes (at least one for m10-canary to run); the example ships the "
        "pipeline's own health, add http/sql probes",
        ship=True,
        example=[
            {"name": "outbox-backlog", "type": "outbox_backlog", "max_pending": 1000},
            {"name": "outbox-age", "type": "outbox_oldest_age", "max_age_s": 300, "critical": True},
            {"name": "dead-letters", "type": "dead_letter_rate", "max_per_hour": 10},
            {"name": "redis", "type": "redis"},
        ],
    )

    def problems(self) -> Iterator[str]:
        if self.marginal_threshold > self.pass_threshold:
            yield (
                f"marginal_threshold ({self.marginal_threshold}) is above "
                f"canary.pass_threshold ({self.pass_threshold})"
            )
        names = [p.name for p in self.probes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            yield (
                f"probes: duplicate probe name(s) {', '.join(dupes)}; give every probe its own name"
            )
        if self.probes and sum(p.weight for p in self.probes) <= 0:
            yield "probes: every weight is 0; give at least one probe a positive weight"

    def thresholds(self) -> cr.Thresholds:
        from m10jobs.jobs.canary import report as cr  # the pass's module, not the declaration's

        return cr.Thresholds(self.pass_threshold, self.marginal_threshold, self.max_no_data_share)


# Never handed to a command, even when listed: the jobs' own credentials.
SECRET_ENV = re.compile(r"^(M10_.*|AWS_.*|PG(PASSWORD|PASSFILE|SERVICEFILE)|REDISCLI_AUTH)$")


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_names(names: tuple[str, ...] | dict[str, str]) -> str | None:
    """What a pass_env/env entry must be, when one is not (the check of both settings)."""
    for name in names:
        if not ENV_NAME.match(name):
            return f"environment variable names ({name!r} is not one)"
        if SECRET_ENV.match(name):
            return (
                f"names other than the jobs' own settings and credentials ({name} is never "
                "given to the rollback command: give it credentials of its own)"
            )
    return None


@dataclass(frozen=True)
class RollbackSettings:
    """[rollback]: what to run (and which feature flags to set) on a fresh failing
    report, how often, with which environment.  Neither command nor set_flags:
    m10-rollback warns and does nothing (exit 0)."""

    SECTION: ClassVar[str] = "rollback"

    command: tuple[str, ...] = setting(
        (),
        "argv run without a shell (unset: m10-rollback warns and does nothing)",
        example=["/usr/local/bin/rollback-deploy", "--to", "previous"],
    )
    set_flags: dict[str, Any] = setting(
        {},
        "feature flags set (docs/flags.md) once per acted report, before the command",
        check=check_flags,
        example={"new-checkout": False},
    )
    timeout_s: float = setting(300.0, "the command is killed after this long", min=0.001, max=600)
    max_report_age_s: float = setting(900.0, "an older report is not acted on", min=1.0)
    cooldown_seconds: int = setting(
        1800,
        "cluster-wide: no new rollback within this long of the last one (0: off)",
        min=0,
        max=7 * 86400,
    )
    pass_env: tuple[str, ...] = setting(
        (),
        "variables passed from the job's environment to the command (no M10_*, AWS_*, "
        "PGPASSWORD...); their values are masked in every output",
        check=_env_names,
        secret_env=True,
        example=["KUBECONFIG"],
    )
    env: dict[str, str] = setting(
        {},
        "literal environment given to the command; every value is masked in every output",
        check=_env_names,
        secret=True,
        example={"DEPLOY_TARGET": "production"},
    )
