"""m10-canary: run the probes, score them, write latest_report.json (seed: canary_runner.py).

Each probe yields pass / fail / no_data.  A probe fails when its *subject*
misbehaves (HTTP endpoint slow, wrong status, unreachable or timing out;
Redis not answering PING; a measured value over its threshold) and has no
data when it could not measure (a SQL probe's query errored or timed out, or
returned nothing).  The report is written atomically, first as a history copy
`<run_id>.json`, then as `latest_report.json`, so the consumer (m10-rollback)
only ever sees a whole report.  The canary itself exits 0 whatever the
verdict: judging the verdict is the consumer's job.
"""

from __future__ import annotations

import contextlib
import math
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from m10jobs import canary_report as cr
from m10jobs.errors import ConfigError
from m10jobs.registry import Flow, Job
from m10jobs.settings import setting

if TYPE_CHECKING:
    from m10jobs.runner import PassContext

COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda v, t: v <= t, "<": lambda v, t: v < t,
    ">=": lambda v, t: v >= t, ">": lambda v, t: v > t, "==": lambda v, t: v == t,
}
COMMON_KEYS = frozenset({"name", "type", "weight", "critical", "timeout_s"})
MAX_BODY = 64 * 1024
STALE_TMP_S = 3600


@dataclass(frozen=True)
class Probe:
    name: str
    type: str
    weight: float
    critical: bool
    timeout_s: float
    threshold: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Measured(Exception):
    """A probe's outcome, raised from deep inside it (status, value, detail)."""

    def __init__(self, status: cr.Status, value: float | None, detail: str) -> None:
        super().__init__(detail)
        self.status, self.value, self.detail = status, value, detail


# -- probe types ---------------------------------------------------------------------------

def _http(ctx: PassContext, p: Probe) -> tuple[cr.Status, float | None, str]:
    """GET url: pass when the status is expected and the latency (ms) within the threshold."""
    import urllib.error
    import urllib.request

    url, expect = p.extra["url"], p.extra["expect_status"]
    handlers: list[urllib.request.BaseHandler] = []
    if not p.extra["use_proxy"]:
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, headers={"User-Agent": "m10-canary"})
    t0 = time.monotonic()
    try:
        try:
            with opener.open(request, timeout=p.timeout_s) as resp:
                resp.read(MAX_BODY)
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
    except TimeoutError:
        return "fail", None, f"no response within {p.timeout_s:g}s (timed out)"
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            return "fail", None, f"no response within {p.timeout_s:g}s (timed out)"
        return "fail", None, f"unreachable: {exc.reason}"
    except (OSError, ValueError) as exc:
        return "fail", None, f"request failed: {exc}"
    ms = round((time.monotonic() - t0) * 1000, 1)
    if ms > p.timeout_s * 1000:
        return "fail", ms, f"answered after {ms:g} ms, beyond the {p.timeout_s:g}s timeout"
    if status != expect:
        return "fail", ms, f"HTTP {status}, expected {expect}"
    assert p.threshold is not None
    if ms > p.threshold:
        return "fail", ms, f"HTTP {status} in {ms:g} ms, over {p.threshold:g} ms"
    return "pass", ms, f"HTTP {status} in {ms:g} ms"


def _redis(ctx: PassContext, p: Probe) -> tuple[cr.Status, float | None, str]:
    """PING: pass when PONG comes back within the latency threshold (ms)."""
    import redis

    from m10jobs.edges.streams import describe
    from m10jobs.redact import redact

    url = p.extra["url"] or ctx.config.redis_url
    client = redis.Redis.from_url(url, socket_timeout=p.timeout_s,
                                  socket_connect_timeout=p.timeout_s)
    t0 = time.monotonic()
    try:
        client.ping()
    except redis.TimeoutError:
        return "fail", None, f"Redis at {describe(url)}: no PONG within {p.timeout_s:g}s"
    except redis.RedisError as exc:
        return "fail", None, f"Redis at {describe(url)}: {redact(str(exc))}"
    finally:
        client.close()
    ms = round((time.monotonic() - t0) * 1000, 1)
    assert p.threshold is not None
    if ms > p.threshold:
        return "fail", ms, f"PONG in {ms:g} ms, over {p.threshold:g} ms"
    return "pass", ms, f"PONG in {ms:g} ms"


def _read_only(ctx: PassContext, p: Probe, sql: str, params: dict[str, Any] | None = None
               ) -> dict[str, Any] | None:
    """First row of a statement run read-only under the probe's timeout.

    A query error or timeout raises Measured(no_data): the probe could not measure.
    """
    import psycopg

    from m10jobs.edges import db
    from m10jobs.edges.queries import query

    try:
        with ctx.conn.transaction():
            ctx.conn.execute("SET TRANSACTION READ ONLY")
            ctx.conn.execute(query("canary_statement_timeout"),
                             {"ms": str(max(1, int(p.timeout_s * 1000)))})
            # prepare=True: one statement only, so "SELECT 1; COMMIT; ..." cannot escape
            # the read-only transaction.
            return ctx.conn.execute(sql, params, prepare=True).fetchone()  # type: ignore[arg-type]
    except psycopg.errors.QueryCanceled:
        raise Measured("no_data", None, f"query timed out after {p.timeout_s:g}s") from None
    except psycopg.Error as exc:
        if db.is_connection_error(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Measured("no_data", None, f"query failed: {first}") from None


def _against(p: Probe, value: float, unit: str, compare: str = "<=") -> tuple[cr.Status, float,
                                                                              str]:
    assert p.threshold is not None
    ok = COMPARE[compare](value, p.threshold)
    return ("pass" if ok else "fail"), value, (
        f"{value:g}{unit}, {'' if ok else 'not '}{compare} {p.threshold:g}{unit}")


def _sql(ctx: PassContext, p: Probe) -> tuple[cr.Status, float | None, str]:
    """The operator's query: first column of the first row compared with the threshold."""
    row = _read_only(ctx, p, p.extra["query"])
    value = next(iter(row.values()), None) if row else None
    if isinstance(value, bool):
        value = float(value)
    try:
        number = float(value) if value is not None else None
    except (TypeError, ValueError):
        return "no_data", None, f"query returned {type(value).__name__} {value!r}, not a number"
    if number is None:
        return "no_data", None, "query returned no row or NULL"
    if not math.isfinite(number):
        return "no_data", None, f"query returned {number}, not a finite number"
    return _against(p, number, "", p.extra["compare"])


def _outbox_backlog(ctx: PassContext, p: Probe) -> tuple[cr.Status, float | None, str]:
    from m10jobs.edges.queries import query

    row = _read_only(ctx, p, query("canary_outbox_backlog"))
    assert row is not None
    return _against(p, row["pending"], " pending")


def _outbox_oldest_age(ctx: PassContext, p: Probe) -> tuple[cr.Status, float | None, str]:
    from m10jobs.edges.queries import query

    row = _read_only(ctx, p, query("canary_outbox_backlog"))
    assert row is not None
    return _against(p, round(row["oldest_age_s"], 1), "s")


def _dead_letter_rate(ctx: PassContext, p: Probe) -> tuple[cr.Status, float | None, str]:
    """Dead letters per hour over the last window_s seconds."""
    from m10jobs.edges.queries import query

    window = p.extra["window_s"]
    row = _read_only(ctx, p, query("canary_dead_letters"), {"window_s": window})
    assert row is not None
    return _against(p, round(row["dead_letters"] * 3600 / window, 3), "/h")


@dataclass(frozen=True)
class ProbeType:
    run: Callable[[PassContext, Probe], tuple[cr.Status, float | None, str]]
    threshold_key: str
    threshold_default: float | None
    keys: frozenset[str] = frozenset()


PROBE_TYPES: dict[str, ProbeType] = {
    "http": ProbeType(_http, "max_latency_ms", 1000.0,
                      frozenset({"url", "expect_status", "use_proxy"})),
    "redis": ProbeType(_redis, "max_latency_ms", 250.0, frozenset({"url"})),
    "sql": ProbeType(_sql, "threshold", None, frozenset({"query", "compare"})),
    "outbox_backlog": ProbeType(_outbox_backlog, "max_pending", 1000.0),
    "outbox_oldest_age": ProbeType(_outbox_oldest_age, "max_age_s", 300.0),
    "dead_letter_rate": ProbeType(_dead_letter_rate, "max_per_hour", 10.0,
                                  frozenset({"window_s"})),
}


# -- configuration -------------------------------------------------------------------------

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
    url: str | None = setting(None, "http: the URL (required); redis: default redis_url",
                              secret=True)
    expect_status: int | None = setting(None, "http: expected status (default 200)", min=100,
                                        max=599)
    use_proxy: bool | None = setting(None, "http: honour *_proxy variables (default false)")
    query: str | None = setting(None, "sql: read-only query returning one number (required)")
    compare: str | None = setting(None, "sql: value <compare> threshold passes (default <=)",
                                  choices=tuple(COMPARE))
    threshold: float | None = setting(None, "sql: the threshold (required)")
    window_s: int | None = setting(None, "dead_letter_rate: window (default 3600)", min=60,
                                   max=7 * 86400)
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
        extra: dict[str, Any] = {
            "http": {"url": self.url, "expect_status": self.expect_status or 200,
                     "use_proxy": bool(self.use_proxy)},
            "redis": {"url": self.url or ""},
            "sql": {"query": self.query, "compare": self.compare or "<="},
            "dead_letter_rate": {"window_s": self.window_s or 3600},
        }.get(self.type, {})
        return Probe(self.name, self.type, self.weight, self.critical, self.timeout_s,
                     pt.threshold_default if threshold is None else threshold, extra)


@dataclass(frozen=True)
class CanarySettings:
    """[canary]: the probes and how their results become a verdict."""

    SECTION: ClassVar[str] = "canary"

    target: str = setting("default", "what the report is about (a deployment name)")
    pass_threshold: float = setting(0.9, "score at or above: pass", min=0, max=1)
    marginal_threshold: float = setting(0.6, "score at or above: marginal (below: fail)",
                                        min=0, max=1)
    max_no_data_share: float = setting(0.5, "more probes without data: inconclusive", min=0,
                                       max=1)
    history_keep: int = setting(200, "history copies of the report kept (0: all)", min=0)
    probes: tuple[ProbeSettings, ...] = setting(
        (), "the probes (at least one for m10-canary to run); the example ships the "
        "pipeline's own health, add http/sql probes", ship=True, example=[
            {"name": "outbox-backlog", "type": "outbox_backlog", "max_pending": 1000},
            {"name": "outbox-age", "type": "outbox_oldest_age", "max_age_s": 300,
             "critical": True},
            {"name": "dead-letters", "type": "dead_letter_rate", "max_per_hour": 10},
            {"name": "redis", "type": "redis"}])

    def problems(self) -> Iterator[str]:
        if self.marginal_threshold > self.pass_threshold:
            yield (f"marginal_threshold ({self.marginal_threshold}) is above "
                   f"canary.pass_threshold ({self.pass_threshold})")
        names = [p.name for p in self.probes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            yield (f"probes: duplicate probe name(s) {', '.join(dupes)}; give every probe its "
                   "own name")
        if self.probes and sum(p.weight for p in self.probes) <= 0:
            yield "probes: every weight is 0; give at least one probe a positive weight"

    def thresholds(self) -> cr.Thresholds:
        return cr.Thresholds(self.pass_threshold, self.marginal_threshold,
                             self.max_no_data_share)


def probes(s: CanarySettings, source: str) -> list[Probe]:
    if not s.probes:
        raise ConfigError(f"config key canary.probes is empty (in {source}); add at least "
                          "one [[canary.probes]] table, see docs/canary.md")
    return [p.probe() for p in s.probes]


# -- the pass ------------------------------------------------------------------------------

def run_probe(ctx: PassContext, p: Probe) -> cr.ProbeResult:
    from m10jobs.redact import redact

    t0 = time.monotonic()
    try:
        status, value, detail = PROBE_TYPES[p.type].run(ctx, p)
    except Measured as m:
        status, value, detail = m.status, m.value, m.detail
    ms = round((time.monotonic() - t0) * 1000, 1)
    result = cr.ProbeResult(p.name, p.type, status, value, p.threshold, p.weight, p.critical,
                            redact(detail), ms)
    ctx.log.log(20 if status == "pass" else 30, "probe %s (%s): %s, %s", p.name, p.type,
                status, result.detail, extra={"probe": p.name, "status": status})
    return result


def _trim_history(reports: Path, keep: int, current: str) -> int:
    """Delete the oldest history copies beyond `keep` (never the current one)."""
    if keep <= 0:
        return 0
    history = sorted((f for f in reports.glob("*.json")
                      if f.name != cr.LATEST and f.stem != current),
                     key=lambda f: f.stat().st_mtime, reverse=True)
    removed = 0
    for old in history[keep - 1:]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
            removed += 1
    return removed


def _remove_stale_tmp(reports: Path) -> None:
    """Temp files left by a writer killed mid-write (we hold the lease: none is ours)."""
    cutoff = time.time() - STALE_TMP_S
    for tmp in reports.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()


def canary_pass(ctx: PassContext) -> dict[str, Any]:
    from m10jobs.edges.files import atomic_write_json

    s = ctx.config.settings(CanarySettings)
    limits = s.thresholds()
    configured = probes(s, ctx.config.source)
    target, keep = s.target, s.history_keep
    started = time.time()
    results = []
    for p in configured:
        ctx.check()
        results.append(run_probe(ctx, p))
    report = cr.build(run_id=ctx.run_id, target=target, host=socket.gethostname(),
                      started=started, finished=time.time(), results=results, thresholds=limits)
    latest = cr.latest_path(ctx.config.state_dir)
    summary = {"verdict": report["verdict"], "score": report["score"],
               "reason": report["reason"], "counts": report["counts"]}
    if ctx.dry_run:
        ctx.log.info("would write verdict %s (%s) to %s", report["verdict"], report["reason"],
                     latest)
        return {**summary, "would_write": str(latest)}
    ctx.check()
    reports = cr.reports_dir(ctx.config.state_dir)
    reports.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(reports)
    history = cr.history_path(ctx.config.state_dir, ctx.run_id)
    atomic_write_json(history, report)
    atomic_write_json(latest, report)
    trimmed = _trim_history(reports, keep, ctx.run_id)
    ctx.gauge("m10_canary_score", report["score"] if report["score"] is not None else -1,
              "Weighted share of passing probes in the last canary run (-1: no data).")
    for v in cr.VERDICTS:
        ctx.gauge("m10_canary_verdict", 1 if v == report["verdict"] else 0,
                  "1 for the verdict of the last canary run.", verdict=v)
    ctx.log.info("canary verdict %s: %s", report["verdict"], report["reason"],
                 extra={"verdict": report["verdict"], "score": report["score"]})
    return {**summary, "report": str(latest), "history": str(history),
            "history_trimmed": trimmed}


JOB = Job(
    script="m10-canary",
    lock="m10:canary",
    run=canary_pass,
    summary="Run the configured canary probes and write latest_report.json.",
    example="m10-canary --config /etc/m10jobs/m10jobs.toml --dry-run",
    schedule="*:0/5",
    after=("postgresql.service", "redis-server.service"),
    wants=("network-online.target",),
    produces=(
        Flow("marker", cr.LATEST, f"$M10_STATE_DIR/canary/reports/{cr.LATEST}",
             "Canary verdict (pass/marginal/fail/inconclusive), score and per-probe results; "
             "history copy <run_id>.json beside it", ("m10-rollback",)),
    ),
    consumes=("m10_recovery.outbox", "m10_recovery.dead_letter_archive"),
    settings=(CanarySettings,),
)
