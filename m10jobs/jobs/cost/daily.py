"""aos-cost-snapshot-daily: daily snapshot, rolling baseline and anomalies.

Its unit runs after aos-cost-snapshot-hourly.  For every missing complete UTC
day (plus the last `resnapshot_days` again), in one transaction per day:

  * the day's rows are the sum of its 24 hourly snapshots, so daily totals
    always equal the sum of hourly; they are checked against the source for
    the whole day and a difference (late records outside the hourly
    re-snapshot window) is logged and counted, not silently absorbed;
  * the baseline is the mean and sample standard deviation of the previous
    `baseline_days` snapshotted days per tenant/category (a day without a row
    counts as 0);
  * the day is an anomaly when its amount is above mean + k*stddev and above
    `anomaly_min_amount_usd`, with at least `baseline_min_days` of history:
    a row in aos_cost.anomalies, a warning log line and a metric.

A day whose 24 hours are not all snapshotted is not built; the next pass
retries it.  Days before the first hourly snapshot are never built.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from m10jobs.edges.lease import StillHeld, live_holder, wait_until_free
from m10jobs.edges.queries import one, query
from m10jobs.errors import TaskFailed
from m10jobs.jobs.cost import common as cc
from m10jobs.jobs.cost.settings import HOURLY_LOCK, CostSettings

if TYPE_CHECKING:
    import psycopg

    from m10jobs.runner import PassContext

MAX_MISMATCH_LINES = 20


@dataclass(frozen=True)
class Anomaly:
    day: str
    tenant_id: str
    category: str
    amount_usd: Decimal
    mean_usd: Decimal
    stddev_usd: Decimal
    threshold_usd: Decimal

    def describe(self, k: Decimal) -> str:
        return (
            f"cost anomaly: tenant {self.tenant_id} category {self.category} on {self.day}: "
            f"{self.amount_usd} USD is above mean {self.mean_usd:.2f} + {k} x stddev "
            f"{self.stddev_usd:.2f} = {self.threshold_usd:.2f} USD"
        )


def judge(
    amount: Decimal, mean: Decimal, stddev: Decimal, observed: int, s: CostSettings
) -> Decimal | None:
    """The threshold when `amount` is an anomaly, else None."""
    threshold = mean + s.anomaly_k * stddev
    if observed >= s.baseline_min_days and amount > threshold and amount > s.anomaly_min_amount_usd:
        return threshold
    return None


def build_day(
    cur: psycopg.Cursor[Any], ctx: PassContext, s: CostSettings, start: datetime
) -> tuple[int, list[Anomaly]]:
    """One day in the caller's transaction: reads, then fence, then snapshot, baseline
    and anomalies."""
    day = start.date().isoformat()
    bounds = {"day_start": start, "day_end": start + cc.DAY}
    totals = {
        (r["tenant_id"], r["category"]): cc.Totals(r["amount_usd"], r["record_count"])
        for r in cur.execute(query("cost_day_from_hours"), bounds).fetchall()
    }
    source = cc.read_source(cur, s.query, start, start + cc.DAY)
    mismatches = 0
    for key in sorted(set(totals) | set(source)):
        hourly = totals.get(key, cc.Totals(Decimal(0), 0)).amount_usd
        direct = source.get(key, cc.Totals(Decimal(0), 0)).amount_usd
        if hourly != direct:
            mismatches += 1
            if mismatches <= MAX_MISMATCH_LINES:
                ctx.log.warning(
                    "day %s tenant %s category %s: hourly snapshots sum to %s USD "
                    "but the source now says %s USD (records arrived after the "
                    "hourly re-snapshot window); rerun aos-cost-snapshot-hourly "
                    "--resnapshot-hours N covering that day, then this job",
                    day,
                    key[0],
                    key[1],
                    hourly,
                    direct,
                    extra={"tenant": key[0], "category": key[1]},
                )
    ctx.fence(cur)
    cc.write_period(cur, "day", start, totals, cc.token(ctx), mismatches)

    window_start = start - s.baseline_days * cc.DAY
    baselines = cur.execute(
        query("cost_baseline"), {"window_start": window_start, "day_start": start}
    ).fetchall()
    anomalies: list[Anomaly] = []
    for b in baselines:
        key = (b["tenant_id"], b["category"])
        cur.execute(
            query("cost_upsert_baseline"),
            {
                "day": day,
                "tenant_id": key[0],
                "category": key[1],
                "window_days": s.baseline_days,
                "days_observed": b["days_observed"],
                "mean_usd": b["mean_usd"],
                "stddev_usd": b["stddev_usd"],
                "token": cc.token(ctx),
            },
        )
        amount = totals.get(key, cc.Totals(Decimal(0), 0)).amount_usd
        threshold = judge(amount, b["mean_usd"], b["stddev_usd"], b["days_observed"], s)
        if threshold is not None:
            a = Anomaly(day, key[0], key[1], amount, b["mean_usd"], b["stddev_usd"], threshold)
            anomalies.append(a)
            cur.execute(
                query("cost_upsert_anomaly"),
                {
                    **a.__dict__,
                    "k": s.anomaly_k,
                    "min_amount_usd": s.anomaly_min_amount_usd,
                    "token": cc.token(ctx),
                },
            )
    kept = {
        "day": day,
        "tenants": [b["tenant_id"] for b in baselines],
        "categories": [b["category"] for b in baselines],
    }
    cur.execute(query("cost_delete_stale_baselines"), kept)
    cur.execute(
        query("cost_delete_cleared_anomalies"),
        {
            "day": day,
            "tenants": [a.tenant_id for a in anomalies],
            "categories": [a.category for a in anomalies],
        },
    )
    return mismatches, anomalies


@cc.exact_decimals
def snapshot_days(ctx: PassContext) -> dict[str, Any]:
    s = ctx.config.settings(CostSettings)
    redo = ctx.params.get("resnapshot_days")
    redo = s.resnapshot_days if redo is None else redo
    cc.validate_source(ctx.conn, s.query)
    end = cc.floor(cc.now_utc(ctx), cc.DAY)
    first_hour = one(ctx.conn.execute(query("cost_first_period"), {"granularity": "hour"}))["first"]
    if first_hour is None:
        ctx.log.info(
            "no hourly snapshots yet: nothing to build (aos-cost-snapshot-hourly runs first)"
        )
        return {"days": [], "pending": []}
    first_hour = first_hour.astimezone(UTC)
    first_day = cc.floor(first_hour, cc.DAY)
    if first_day < first_hour:
        first_day += cc.DAY  # only partly covered by hourly history: never built
    done, history = cc.done_periods(ctx.conn, "day", end - s.backfill_max_days * cc.DAY, end)
    plan = cc.plan_periods(done, history, end, cc.DAY, s.backfill_max_days, redo)
    days = [d for d in plan.periods if d >= first_day]
    ready, pending = _split(ctx, days)
    if pending and not ctx.dry_run and _waited_for_hourly(ctx, s, pending):
        ready, pending = _split(ctx, days)
    for d, hours in pending:
        ctx.log.warning(
            "day %s not built: %d of 24 hours are snapshotted; run "
            "aos-cost-snapshot-hourly (raise [cost] backfill_max_hours if the "
            "hours are older than its cap), the next pass builds it",
            d.date().isoformat(),
            hours,
        )
    if plan.skipped:
        ctx.log.warning(
            "%d missing day(s) are older than the backfill cap (%d days) and were "
            "left alone; raise [cost] backfill_max_days and rerun to fill them",
            plan.skipped,
            s.backfill_max_days,
        )
    summary: dict[str, Any] = {
        "days": [d.date().isoformat() for d, _ in ready],
        "pending": [d.date().isoformat() for d, _ in pending],
        "skipped_by_cap": plan.skipped,
    }
    if ctx.dry_run:
        return {**summary, "would_build": summary.pop("days")}

    anomalies: list[Anomaly] = []
    mismatches = 0
    built, bad = cc.each_period(
        ctx, "day", [d for d, _ in ready], lambda cur, d: build_day(cur, ctx, s, d)
    )
    for _, (day_mismatches, day_anomalies) in built:
        mismatches += day_mismatches
        anomalies += day_anomalies
        for a in day_anomalies:  # once committed, so a later failure cannot hide it
            ctx.log.warning(
                "%s",
                a.describe(s.anomaly_k),
                extra={"anomaly": {k: str(v) for k, v in a.__dict__.items()}},
            )
            ctx.gauge(
                "aos_cost_anomaly_amount_usd",
                float(a.amount_usd),
                "Day total of each anomaly flagged by the last run.",
                tenant=a.tenant_id,
                category=a.category,
                day=a.day,
            )
    _gauges(
        ctx,
        [r for r in ready if r[0] not in bad],
        pending,
        plan.skipped,
        anomalies,
        mismatches,
        end,
    )
    summary.update(anomalies=len(anomalies), source_mismatches=mismatches)
    summary["days"] = [d.date().isoformat() for d, _ in built]
    cc.refuse_bad("day", bad, len(built), summary)
    stale = [d for d, _ in pending if d < end - cc.DAY]
    if plan.skipped:  # counted from the snapshot table: stays until the hole is filled
        raise TaskFailed(
            f"{plan.skipped} missing day(s) are older than the backfill cap "
            f"({s.backfill_max_days} days) and were not built (the newer ones "
            "were); raise [cost] backfill_max_days and rerun to fill them",
            summary,
        )
    if stale:
        raise TaskFailed(
            f"{len(stale)} day(s) from {stale[0].date().isoformat()} could not be "
            "built because hourly snapshots are missing; run "
            "aos-cost-snapshot-hourly, then rerun this job"
        )
    return summary


def _split(
    ctx: PassContext, days: list[datetime]
) -> tuple[list[tuple[datetime, int]], list[tuple[datetime, int]]]:
    """(days whose 24 hours are snapshotted, days still missing hours), with hour counts."""
    ready: list[tuple[datetime, int]] = []
    pending: list[tuple[datetime, int]] = []
    for d in days:
        hours = one(
            ctx.conn.execute(query("cost_hours_done"), {"day_start": d, "day_end": d + cc.DAY})
        )["hours"]
        (ready if hours == 24 else pending).append((d, hours))
    return ready, pending


def _waited_for_hourly(
    ctx: PassContext, s: CostSettings, pending: list[tuple[datetime, int]]
) -> bool:
    """Hours are missing: if an hourly run holds its lease (on another host: After=
    orders the two only on one host), wait for it, bounded; True when we waited and
    should look again.  Still held -> skipped (75), never a false "missing" failure."""
    if live_holder(ctx.conn, HOURLY_LOCK) is None:
        return False
    first = pending[0][0].date().isoformat()
    ctx.log.info(
        "hourly snapshots missing for %s while %s is held; waiting up to %ss for it",
        first,
        HOURLY_LOCK,
        s.hourly_wait_seconds,
    )
    holder = wait_until_free(ctx.conn, HOURLY_LOCK, s.hourly_wait_seconds, ctx.check)
    if holder is not None:
        raise StillHeld(
            HOURLY_LOCK,
            holder,
            s.hourly_wait_seconds,
            f"hourly snapshots are missing for {len(pending)} day(s) from {first} "
            "while aos-cost-snapshot-hourly runs elsewhere",
        )
    return True


def _gauges(
    ctx: PassContext,
    ready: list[tuple[datetime, int]],
    pending: list[tuple[datetime, int]],
    skipped: int,
    anomalies: list[Anomaly],
    mismatches: int,
    end: datetime,
) -> None:
    ctx.gauge("aos_cost_days_snapshotted", len(ready), "Days (re)built by the last run.")
    ctx.gauge(
        "aos_cost_days_pending",
        len(pending),
        "Days not built because their hourly snapshots are incomplete.",
    )
    ctx.gauge(
        "aos_cost_backfill_skipped_periods",
        skipped,
        "Missing periods older than the backfill cap.",
        granularity="day",
    )
    ctx.gauge(
        "aos_cost_anomalies_flagged",
        len(anomalies),
        "Anomalies flagged (or re-flagged) by the last run.",
    )
    ctx.gauge(
        "aos_cost_daily_source_mismatches",
        mismatches,
        "Tenant/category days whose hourly sum differs from the source.",
    )
    latest = (end - cc.DAY).date().isoformat()
    count = one(ctx.conn.execute(query("cost_anomalies_on_day"), {"day": latest}))
    ctx.gauge(
        "aos_cost_anomalies_latest_day",
        count["anomalies"],
        "Anomalies on the latest complete UTC day (alert when > 0).",
    )
    if ready:
        ctx.gauge(
            "aos_cost_last_period_end_timestamp_seconds",
            (ready[-1][0] + cc.DAY).timestamp(),
            "End of the newest period snapshotted.",
            granularity="day",
        )
