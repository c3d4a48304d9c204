"""[cost] (both cost jobs) and their lease names.

Imported by the declarations in __init__, so it stays cheap: no driver imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from m10jobs.settings import setting

HOURLY_LOCK = "aos:cost_snapshot_hourly"
DAILY_LOCK = "aos:cost_snapshot_daily"
# What a cost source query returns, exactly (checked by common.check_columns).
SOURCE_COLUMNS = ("tenant_id", "category", "amount_usd", "record_count")


def _placeholders(source_query: str) -> str | None:
    missing = [n for n in ("period_start", "period_end") if f"%({n})s" not in source_query]
    return (
        (f"a query filtering on %({missing[0]})s (each period is [period_start, period_end))")
        if missing
        else None
    )


@dataclass(frozen=True)
class CostSettings:
    """[cost] (both cost jobs): the source query, backfill caps, the anomaly rule."""

    SECTION: ClassVar[str] = "cost"

    source_query: str = setting(
        "",
        f"SELECT returning ({', '.join(SOURCE_COLUMNS)}) for %(period_start)s .. "
        "%(period_end)s (empty: the built-in query on aos_cost.cost_records)",
        check=_placeholders,
    )
    backfill_max_hours: int = setting(
        168, "hourly: missing hours filled per pass, at most", min=1, max=24 * 366
    )
    resnapshot_hours: int = setting(
        3, "hourly: recent hours snapshotted again (late rows)", min=0, max=24 * 31
    )
    backfill_max_days: int = setting(
        35, "daily: missing days filled per pass, at most", min=1, max=3660
    )
    resnapshot_days: int = setting(2, "daily: recent days snapshotted again", min=0, max=366)
    baseline_days: int = setting(14, "days of history behind the anomaly baseline", min=2, max=366)
    baseline_min_days: int = setting(7, "fewer days of history: no anomaly verdict", min=2, max=366)
    anomaly_k: Decimal = setting(Decimal("3"), "flag a day above mean + k * stddev", min=0)
    anomaly_min_amount_usd: Decimal = setting(Decimal("50.00"), "and above this amount", min=0)
    hourly_wait_seconds: int = setting(
        60,
        "daily: how long to wait for an hourly run holding its lease (on another host) "
        "before skipping with 75",
        min=0,
        max=600,
    )

    @property
    def query(self) -> str:
        """The source query to run (the built-in one unless configured)."""
        from m10jobs.edges.queries import query  # the pass's, not --help's

        return self.source_query or query("cost_source_default")
