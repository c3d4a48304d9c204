"""What both cost snapshot jobs share: UTC period planning, the configurable
source query (validated before any period is written) and the
fenced per-period upsert.

Money is Decimal end to end (PostgreSQL numeric <-> Python Decimal); floats
never touch an amount.  Periods are half-open UTC intervals [start, start+step),
and "now" is the database clock (or --until), never the host's.  The [cost]
settings are in settings.py, the --until option in __init__.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    Context,
    Decimal,
    Inexact,
    InvalidOperation,
    localcontext,
)
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.postgres import types

from m10jobs.edges import db
from m10jobs.edges.queries import one, query
from m10jobs.errors import BadInput, ConfigError, some_refused
from m10jobs.jobs.cost.settings import SOURCE_COLUMNS

if TYPE_CHECKING:
    from m10jobs.runner import PassContext

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# What the source query must return, and the PostgreSQL types accepted for each.
_TEXT = {25: "text", 1043: "varchar", 1042: "char", 19: "name"}
_INTEGER = {20: "bigint", 23: "integer", 21: "smallint"}
_EXACT = {1700: "numeric", **_INTEGER}
_ACCEPTED = {
    "tenant_id": _TEXT,
    "category": _TEXT,
    "amount_usd": _EXACT,
    "record_count": {**_INTEGER, 1700: "numeric"},
}
_CAST_HINT = {
    "tenant_id": "tenant_id::text",
    "category": "category::text",
    "amount_usd": "amount_usd::numeric (floats are not exact)",
    "record_count": "record_count::bigint",
}

# Sums and k*stddev never round: the default context (28 digits) would, silently.
EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation, Inexact])


def exact_decimals(
    fn: Callable[[PassContext], dict[str, Any]],
) -> Callable[[PassContext], dict[str, Any]]:
    """Run a pass with Decimal arithmetic that raises rather than rounds."""

    @functools.wraps(fn)
    def wrapper(ctx: PassContext) -> dict[str, Any]:
        with localcontext(EXACT):
            return fn(ctx)

    return wrapper


Key = tuple[str, str]
"""(tenant_id, category)"""


@dataclass(frozen=True)
class Totals:
    amount_usd: Decimal
    record_count: int


def now_utc(ctx: PassContext) -> datetime:
    """The database clock, or --until (which must not be in its future)."""
    db_now = db.now(ctx.conn)
    until: datetime | None = ctx.params.get("until")
    if until is None:
        return db_now
    if until > db_now:
        raise ConfigError(
            f"--until {until.isoformat()} is after the database clock "
            f"({db_now.isoformat(timespec='seconds')}); periods that have not "
            "ended cannot be snapshotted"
        )
    return until


def floor(t: datetime, step: timedelta) -> datetime:
    """Start of the UTC hour or day containing t."""
    t = t.astimezone(UTC)
    if step == HOUR:
        return t.replace(minute=0, second=0, microsecond=0)
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Plan:
    periods: list[datetime]
    skipped: int
    """Missing periods older than the backfill cap (left alone, reported)."""


def plan_periods(
    done: set[datetime], history: History, end: datetime, step: timedelta, cap: int, redo: int
) -> Plan:
    """Periods to (re)snapshot, oldest first, for complete periods ending by `end`.

    Within the last `cap` periods every missing one is done (so raising the cap
    and rerunning fills an old hole); the last `redo` periods are done again so
    late records converge.  Missing periods older than the cap, after the first
    one ever taken, are counted in `skipped`.
    """
    window_start = end - cap * step
    redo_start = end - min(redo, cap) * step
    periods, t = [], window_start
    while t < end:
        if t >= redo_start or t not in done:
            periods.append(t)
        t += step
    skipped = 0
    if history.first is not None and history.first < window_start:
        skipped = max(0, (window_start - history.first) // step - history.done_before)
    return Plan(periods, skipped)


@dataclass(frozen=True)
class History:
    first: datetime | None
    """The first period ever snapshotted."""
    done_before: int
    """How many periods are done before the planning window."""


def done_periods(
    conn: psycopg.Connection[Any], granularity: str, since: datetime, end: datetime
) -> tuple[set[datetime], History]:
    """Snapshotted periods in [since, end), and what is done before `since`."""
    args = {"granularity": granularity, "since": since, "end": end}
    rows = conn.execute(query("cost_done_periods"), args).fetchall()
    before = one(conn.execute(query("cost_history"), args))
    return (
        {r["period_start"].astimezone(UTC) for r in rows},
        History(
            before["first"].astimezone(UTC) if before["first"] else None, before["done_before"]
        ),
    )


# -- the source -------------------------------------------------------------------
def validate_source(conn: psycopg.Connection[Any], source_query: str) -> None:
    """Run the source query over an empty period, read-only, and check its columns.

    Anything wrong (syntax, missing grant, wrong columns or types, a statement
    that writes) exits 78 before any period is touched.
    """
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(source_query, {"period_start": EPOCH, "period_end": EPOCH})
            description = cur.description
    except psycopg.Error as exc:
        if db.is_connection_error(exc):
            raise
        reason = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)
        hint = (
            "; grant SELECT on the source to m10_ops"
            if isinstance(exc, psycopg.errors.InsufficientPrivilege)
            else ""
        )
        raise ConfigError(
            f"config key cost.source_query failed: {reason}{hint}; "
            "fix the query (it must be a read-only SELECT)"
        ) from None
    if description is None:
        raise ConfigError(
            f"config key cost.source_query returns no rows (not a SELECT); "
            f"it must return {', '.join(SOURCE_COLUMNS)}"
        )
    check_columns([(c.name, c.type_code) for c in description])


def check_columns(columns: list[tuple[str, int]]) -> None:
    """The source's (name, type oid) list must be exactly SOURCE_COLUMNS, exact types."""
    names = [n for n, _ in columns]
    missing = [c for c in SOURCE_COLUMNS if c not in names]
    extra = [n for n in names if n not in SOURCE_COLUMNS]
    duplicate = sorted({n for n in names if names.count(n) > 1})
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected {', '.join(extra)}")
    if duplicate:
        problems.append(f"duplicate {', '.join(duplicate)}")
    for name, oid in columns:
        accepted = _ACCEPTED.get(name)
        if accepted is not None and oid not in accepted:
            problems.append(
                f"{name} has type oid {oid} ({_type_name(oid)}), expected "
                f"{'/'.join(sorted(set(accepted.values())))}: select "
                f"{_CAST_HINT[name]}"
            )
    if problems:
        raise ConfigError(
            f"config key cost.source_query returns the wrong columns "
            f"({'; '.join(problems)}); it must return exactly "
            f"{', '.join(SOURCE_COLUMNS)}"
        )


def _type_name(oid: int) -> str:
    info = types.get(oid)
    return info.name if info else "unknown"


def read_source(
    cur: psycopg.Cursor[Any], source_query: str, start: datetime, end: datetime
) -> dict[Key, Totals]:
    """The source's totals per (tenant, category) for [start, end); repeated keys are summed.

    A NULL key or amount is bad data (65): nothing of this period is written.
    """
    cur.execute(source_query, {"period_start": start, "period_end": end})
    totals: dict[Key, Totals] = {}
    for row in cur.fetchall():
        tenant, category = row["tenant_id"], row["category"]
        amount, count = row["amount_usd"], row["record_count"]
        if tenant in (None, "") or category in (None, "") or amount is None:
            raise BadInput(
                f"the cost source returned a row with an empty tenant_id, category "
                f"or amount_usd for {start.isoformat()}..{end.isoformat()} "
                f"({tenant!r}, {category!r}, {amount!r}); fix the records or "
                "the query (coalesce); nothing was written for that period"
            )
        amount = Decimal(amount)
        count = int(count or 0)
        key = (str(tenant), str(category))
        prev = totals.get(key)
        totals[key] = Totals(
            amount + (prev.amount_usd if prev else 0), count + (prev.record_count if prev else 0)
        )
    return totals


# -- writes -----------------------------------------------------------------------
T = TypeVar("T")


def each_period(
    ctx: PassContext,
    granularity: str,
    periods: list[datetime],
    build: Callable[[psycopg.Cursor[Any], datetime], T],
) -> tuple[list[tuple[datetime, T]], dict[datetime, str]]:
    """Build each period in its own transaction.  One whose source rows are bad (65) is
    rolled back, reported and skipped, and the others proceed; it is missing, so every
    later pass tries it again until the records are fixed.  (built, bad)."""
    built: list[tuple[datetime, T]] = []
    bad: dict[datetime, str] = {}
    for start in periods:
        ctx.check()
        try:
            with ctx.conn.transaction(), ctx.conn.cursor() as cur:
                built.append((start, build(cur, start)))
        except BadInput as exc:
            bad[start] = str(exc)
            ctx.log.error("%s; this %s is skipped, the others proceed", exc, granularity)
    ctx.gauge(
        "aos_cost_bad_periods",
        len(bad),
        "Periods refused for bad source rows (tried again every run until fixed).",
        granularity=granularity,
    )
    return built, bad


def refuse_bad(
    granularity: str, bad: dict[datetime, str], built: int, summary: dict[str, Any]
) -> None:
    """Some periods were refused: 1 when others were written, 65 when none was."""
    if not bad:
        return
    summary["bad"] = [iso(t) for t in bad]
    raise some_refused(
        f"{len(bad)} {granularity}(s) refused and left unwritten ({next(iter(bad.values()))})",
        summary,
        nothing="nothing else to snapshot",
        others=f"the other {granularity}s were written" if built else None,
    )


def write_period(
    cur: psycopg.Cursor[Any],
    granularity: str,
    start: datetime,
    totals: Mapping[Key, Totals],
    token: int | None,
    mismatches: int = 0,
) -> None:
    """Upsert one period's rows, drop rows the source no longer has, mark it done.

    Call inside the period's transaction, after ctx.fence(cur).
    """
    keys = sorted(totals)
    arrays = {
        "granularity": granularity,
        "period_start": start,
        "token": token,
        "tenants": [k[0] for k in keys],
        "categories": [k[1] for k in keys],
        "amounts": [totals[k].amount_usd for k in keys],
        "counts": [totals[k].record_count for k in keys],
    }
    if keys:
        cur.execute(query("cost_upsert_snapshots"), arrays)
    cur.execute(query("cost_delete_stale_snapshots"), arrays)
    cur.execute(
        query("cost_upsert_period"),
        {
            "granularity": granularity,
            "period_start": start,
            "rows": len(keys),
            "amount": sum((t.amount_usd for t in totals.values()), Decimal(0)),
            "records": sum(t.record_count for t in totals.values()),
            "mismatches": mismatches,
            "token": token,
        },
    )


def token(ctx: PassContext) -> int | None:
    return ctx.lease.token if ctx.lease is not None else None


def iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t else None
