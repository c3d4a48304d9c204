"""The cost flow: aos-cost-snapshot-hourly snapshots hours, aos-cost-snapshot-daily
builds days from them, with a baseline and anomaly flags.

hourly.py and daily.py are the passes (imported when they run), common.py what
both share, settings.py the [cost] table and the lease names.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from m10jobs.jobs.cost.settings import DAILY_LOCK, HOURLY_LOCK, CostSettings
from m10jobs.registry import Flow, Job


# -- time -------------------------------------------------------------------------
def parse_until(
    ctx: click.Context | None, param: click.Parameter | None, value: str | None
) -> datetime | None:
    """--until: an ISO 8601 time, UTC unless it says otherwise (click callback)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time such as 2026-01-31T00:00:00Z"
        ) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


UNTIL_OPTION = click.Option(
    ["--until"],
    metavar="TIME",
    callback=parse_until,
    expose_value=True,
    help="Act as if it were TIME (ISO 8601, UTC unless given; not in the future): "
    "only periods that ended by then count.  Default: the database clock.",
)


HOURLY = Job(
    script="aos-cost-snapshot-hourly",
    checks="m10jobs.jobs.cost.health:checks",
    summary="Snapshot every missing complete UTC hour of cost into aos_cost.cost_snapshots.",
    example="aos-cost-snapshot-hourly --dry-run",
    schedule="hourly",
    jitter_seconds=0,  # fires with the daily timer at 00:00 so After= can order them
    lock=HOURLY_LOCK,
    run="m10jobs.jobs.cost.hourly:snapshot_hours",
    after=("network-online.target",),
    wants=("network-online.target",),
    options=(
        UNTIL_OPTION,
        click.Option(
            ["--resnapshot-hours"],
            type=click.IntRange(0, 24 * 31),
            metavar="N",
            help="Redo the last N complete hours this run (default: [cost] resnapshot_hours, 3).",
        ),
    ),
    produces=(
        Flow(
            "table",
            "aos_cost.cost_snapshots (hour)",
            "aos_cost.cost_snapshots",
            "Hourly cost per tenant/category",
            ("aos-cost-snapshot-daily", "m10 cost show"),
        ),
        Flow(
            "checkpoint",
            "aos_cost.snapshot_periods (hour)",
            "aos_cost.snapshot_periods",
            "Hours done: where backfill resumes",
            ("aos-cost-snapshot-daily",),
        ),
    ),
    consumes=("aos_cost.cost_records (or [cost] source_query)",),
    settings=(CostSettings,),
)


DAILY = Job(
    script="aos-cost-snapshot-daily",
    summary="Daily cost snapshot from the hourly ones, rolling baseline, anomaly flags.",
    example="aos-cost-snapshot-daily --dry-run",
    # Seed: daily, after the hourly run.  No jitter on either timer, so both fire at
    # 00:00 together and After= runs the hourly pass (closing the day) first.
    schedule="daily",
    jitter_seconds=0,
    lock=DAILY_LOCK,
    run="m10jobs.jobs.cost.daily:snapshot_days",
    after=("aos-cost-snapshot-hourly.service", "network-online.target"),
    wants=("network-online.target",),
    options=(
        UNTIL_OPTION,
        click.Option(
            ["--resnapshot-days"],
            type=click.IntRange(0, 366),
            metavar="N",
            help="Rebuild the last N complete days this run (default: [cost] resnapshot_days, 2).",
        ),
    ),
    produces=(
        Flow(
            "table",
            "aos_cost.cost_snapshots (day)",
            "aos_cost.cost_snapshots",
            "Daily cost per tenant/category",
            ("m10 cost show",),
        ),
        Flow(
            "table",
            "aos_cost.cost_baselines",
            "aos_cost.cost_baselines",
            "Rolling mean/stddev per tenant/category",
            ("m10 cost show",),
        ),
        Flow(
            "table",
            "aos_cost.anomalies",
            "aos_cost.anomalies",
            "Days above mean + k*stddev",
            ("m10 cost show", "alerting (metric)"),
        ),
    ),
    consumes=(
        "aos_cost.cost_snapshots (hour)",
        "aos_cost.snapshot_periods",
        "aos_cost.cost_records (or [cost] source_query)",
    ),
    settings=(CostSettings,),
)


JOBS = (HOURLY, DAILY)
