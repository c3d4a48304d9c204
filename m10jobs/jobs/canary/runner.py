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
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import redis

from m10jobs.edges import conninfo, db, streams
from m10jobs.edges.files import atomic_write_json, make_dir
from m10jobs.edges.queries import query
from m10jobs.edges.streams import describe
from m10jobs.errors import ConfigError
from m10jobs.jobs.canary import report as cr
from m10jobs.jobs.canary.settings import COMPARE, CanarySettings, Probe
from m10jobs.redact import redact

if TYPE_CHECKING:
    from m10jobs.runner import PassContext

MAX_BODY = 64 * 1024
STALE_TMP_S = 3600


class Measured(Exception):
    """A probe's outcome, raised from deep inside it (status, value, detail)."""

    def __init__(self, status: cr.Status, value: float | None, detail: str) -> None:
        super().__init__(detail)
        self.status, self.value, self.detail = status, value, detail


# -- probe types ---------------------------------------------------------------------------


def _http(ctx: PassContext, p: Probe) -> tuple[cr.Status, float | None, str]:
    """GET url: pass when the status is expected and the latency (ms) within the threshold."""
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
    url = p.extra["url"] or ctx.config.redis_url
    try:
        client = streams.client(url, timeout=p.timeout_s)
    except ConfigError as exc:
        return "fail", None, str(exc)
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


def _read_only(
    ctx: PassContext, p: Probe, sql: str, params: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """First row of a statement run read-only under the probe's timeout.

    A query error or timeout raises Measured(no_data): the probe could not measure.
    """
    try:
        with ctx.conn.transaction():
            ctx.conn.execute("SET TRANSACTION READ ONLY")
            ctx.conn.execute(
                query("canary_statement_timeout"), {"ms": str(max(1, int(p.timeout_s * 1000)))}
            )
            # The extended protocol runs one statement only, so "SELECT 1; COMMIT; ..."
            # cannot escape the read-only transaction: prepare=True forces it, or behind a
            # transaction-pooling PgBouncer (where a prepared statement does not survive
            # the transaction) binary results do.
            if conninfo.transaction_pooled():
                return ctx.conn.execute(sql, params, binary=True).fetchone()
            return ctx.conn.execute(sql, params, prepare=True).fetchone()
    except psycopg.errors.QueryCanceled:
        raise Measured("no_data", None, f"query timed out after {p.timeout_s:g}s") from None
    except psycopg.Error as exc:
        if db.is_connection_error(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Measured("no_data", None, f"query failed: {first}") from None


def _against(
    p: Probe, value: float, unit: str, compare: str = "<="
) -> tuple[cr.Status, float, str]:
    assert p.threshold is not None
    ok = COMPARE[compare](value, p.threshold)
    return (
        ("pass" if ok else "fail"),
        value,
        (f"{value:g}{unit}, {'' if ok else 'not '}{compare} {p.threshold:g}{unit}"),
    )


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
    row = _read_only(ctx, p, query("canary_outbox_backlog"))
    assert row is not None
    return _against(p, row["pending"], " pending")


def _outbox_oldest_age(ctx: PassContext, p: Probe) -> tuple[cr.Status, float | None, str]:
    row = _read_only(ctx, p, query("canary_outbox_backlog"))
    assert row is not None
    return _against(p, round(row["oldest_age_s"], 1), "s")


def _dead_letter_rate(ctx: PassContext, p: Probe) -> tuple[cr.Status, float | None, str]:
    """Dead letters per hour over the last window_s seconds."""
    window = p.extra["window_s"]
    row = _read_only(ctx, p, query("canary_dead_letters"), {"window_s": window})
    assert row is not None
    return _against(p, round(row["dead_letters"] * 3600 / window, 3), "/h")


# What runs each type of PROBE_TYPES (settings.py: its keys and threshold).
PROBES: dict[str, Callable[[PassContext, Probe], tuple[cr.Status, float | None, str]]] = {
    "http": _http,
    "redis": _redis,
    "sql": _sql,
    "outbox_backlog": _outbox_backlog,
    "outbox_oldest_age": _outbox_oldest_age,
    "dead_letter_rate": _dead_letter_rate,
}


# -- configuration -------------------------------------------------------------------------


def probes(s: CanarySettings, source: str) -> list[Probe]:
    if not s.probes:
        raise ConfigError(
            f"config key canary.probes is empty (in {source}); add at least "
            "one [[canary.probes]] table, see docs/canary.md"
        )
    return [p.probe() for p in s.probes]


# -- the pass ------------------------------------------------------------------------------


def run_probe(ctx: PassContext, p: Probe) -> cr.ProbeResult:
    t0 = time.monotonic()
    try:
        status, value, detail = PROBES[p.type](ctx, p)
    except Measured as m:
        status, value, detail = m.status, m.value, m.detail
    ms = round((time.monotonic() - t0) * 1000, 1)
    result = cr.ProbeResult(
        p.name, p.type, status, value, p.threshold, p.weight, p.critical, redact(detail), ms
    )
    ctx.log.log(
        20 if status == "pass" else 30,
        "probe %s (%s): %s, %s",
        p.name,
        p.type,
        status,
        result.detail,
        extra={"probe": p.name, "status": status},
    )
    return result


def _trim_history(reports: Path, keep: int, current: str) -> int:
    """Delete the oldest history copies beyond `keep` (never the current one)."""
    if keep <= 0:
        return 0
    history = sorted(
        (f for f in reports.glob("*.json") if f.name != cr.LATEST and f.stem != current),
        key=lambda f: f.stat().st_mtime,
        reverse=True,
    )
    removed = 0
    for old in history[keep - 1 :]:
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
    s = ctx.config.settings(CanarySettings)
    limits = s.thresholds()
    configured = probes(s, ctx.config.source)
    target, keep = s.target, s.history_keep
    # The report's times are the database clock's, as rollback's freshness check (on any
    # host) reads them: a canary host whose clock is skewed cannot make a report look
    # fresher or staler than it is.
    started = db.now(ctx.conn).timestamp()
    results = []
    for p in configured:
        ctx.check()
        results.append(run_probe(ctx, p))
    report = cr.build(
        run_id=ctx.run_id,
        target=target,
        host=socket.gethostname(),
        started=started,
        finished=db.now(ctx.conn).timestamp(),
        results=results,
        thresholds=limits,
    )
    latest = cr.latest_path(ctx.config.state_dir)
    summary = {
        "verdict": report["verdict"],
        "score": report["score"],
        "reason": report["reason"],
        "counts": report["counts"],
    }
    if ctx.dry_run:
        ctx.log.info(
            "would write verdict %s (%s) to %s", report["verdict"], report["reason"], latest
        )
        return {**summary, "would_write": str(latest)}
    ctx.check()
    reports = cr.reports_dir(ctx.config.state_dir)
    make_dir(reports)
    _remove_stale_tmp(reports)
    history = cr.history_path(ctx.config.state_dir, ctx.run_id)
    atomic_write_json(history, report)
    atomic_write_json(latest, report)
    trimmed = _trim_history(reports, keep, ctx.run_id)
    ctx.gauge(
        "m10_canary_report_timestamp_seconds",
        time.time(),
        "Unix time latest_report.json was last written.",
    )
    ctx.gauge(
        "m10_canary_score",
        report["score"] if report["score"] is not None else -1,
        "Weighted share of passing probes in the last canary run (-1: no data).",
    )
    for v in cr.VERDICTS:
        ctx.gauge(
            "m10_canary_verdict",
            1 if v == report["verdict"] else 0,
            "1 for the verdict of the last canary run.",
            verdict=v,
        )
    ctx.log.info(
        "canary verdict %s: %s",
        report["verdict"],
        report["reason"],
        extra={"verdict": report["verdict"], "score": report["score"]},
    )
    return {**summary, "report": str(latest), "history": str(history), "history_trimmed": trimmed}
