"""aos-cost-snapshot-hourly: snapshot every missing complete UTC hour of cost.

Each pass takes the hours missing within the backfill cap (after downtime,
oldest first) plus the last `resnapshot_hours` again, so records that arrive
late converge.  Each hour is one transaction: read the source, fence (after
the read, so a slow source does not hold the lease row), upsert its rows, mark
the hour done.  An hour whose source rows are bad is rolled back, reported and
skipped while the others proceed (exit 1, or 65 when no hour could be written);
any other failure leaves every earlier hour committed and the failing hour
untouched.  Either way the next pass tries the missing hour again.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from m10jobs.errors import TaskFailed
from m10jobs.jobs.cost import common as cc
from m10jobs.jobs.cost.settings import CostSettings

if TYPE_CHECKING:
    import psycopg

    from m10jobs.runner import PassContext


@cc.exact_decimals
def snapshot_hours(ctx: PassContext) -> dict[str, Any]:
    s = ctx.config.settings(CostSettings)
    redo = ctx.params.get("resnapshot_hours")
    redo = s.resnapshot_hours if redo is None else redo
    cc.validate_source(ctx.conn, s.query)
    end = cc.floor(cc.now_utc(ctx), cc.HOUR)
    done, history = cc.done_periods(ctx.conn, "hour", end - s.backfill_max_hours * cc.HOUR, end)
    plan = cc.plan_periods(done, history, end, cc.HOUR, s.backfill_max_hours, redo)
    summary: dict[str, Any] = {
        "hours": len(plan.periods),
        "first": cc.iso(plan.periods[0] if plan.periods else None),
        "last": cc.iso(plan.periods[-1] if plan.periods else None),
        "skipped_by_cap": plan.skipped,
    }
    if plan.skipped:
        ctx.log.warning(
            "%d missing hour(s) are older than the backfill cap (%d h) and were "
            "left alone; raise [cost] backfill_max_hours and rerun to fill them",
            plan.skipped,
            s.backfill_max_hours,
        )
    if ctx.dry_run:
        return {**summary, "would_snapshot": summary.pop("hours")}

    def snapshot(cur: psycopg.Cursor[Any], start: datetime) -> dict[cc.Key, cc.Totals]:
        totals = cc.read_source(cur, s.query, start, start + cc.HOUR)
        ctx.fence(cur)
        cc.write_period(cur, "hour", start, totals, cc.token(ctx))
        ctx.log.debug("hour %s: %d row(s)", cc.iso(start), len(totals))
        return totals

    built, bad = cc.each_period(ctx, "hour", plan.periods, snapshot)
    rows = sum(len(totals) for _, totals in built)
    amount = sum((t.amount_usd for _, totals in built for t in totals.values()), Decimal(0))
    ctx.gauge("aos_cost_hours_snapshotted", len(built), "Hours (re)snapshotted by the last run.")
    ctx.gauge(
        "aos_cost_backfill_skipped_periods",
        plan.skipped,
        "Missing periods older than the backfill cap.",
        granularity="hour",
    )
    if built:
        ctx.gauge(
            "aos_cost_last_period_end_timestamp_seconds",
            end.timestamp(),
            "End of the newest period snapshotted.",
            granularity="hour",
        )
    result = {**summary, "rows": rows, "amount_usd": str(amount)}
    cc.refuse_bad("hour", bad, len(built), result)
    if plan.skipped:  # counted from the snapshot table: stays until the hole is filled
        raise TaskFailed(
            f"{plan.skipped} missing hour(s) are older than the backfill cap "
            f"({s.backfill_max_hours} h) and were not snapshotted (the newer ones "
            "were); raise [cost] backfill_max_hours and rerun to fill them",
            result,
        )
    return result
