"""Health of the cost snapshots (`m10 status`, ARTIFACTS): hourly periods missing."""

from __future__ import annotations

from typing import Any

from m10jobs.health import Checks, Status

COST_GRACE_S = 900
"""An hour counts as missing once it ended this long ago (timer jitter + one pass)."""

checks = Checks()


@checks("artifacts", database=True)
def check_cost(st: Status, config: Any, conn: Any) -> None:
    from m10jobs.edges.queries import query
    from m10jobs.jobs.cost.settings import CostSettings

    window = config.settings(CostSettings).backfill_max_hours
    cost = conn.execute(
        query("status_cost_hours"), {"window_hours": window, "grace_s": COST_GRACE_S}
    ).fetchone()
    st.artifacts["cost"] = {**cost, "window_hours": window}
    if cost["never_ran"]:
        st.red("cost-gap", "no hourly cost snapshot yet", "aos-cost-snapshot-hourly")
    elif cost["hours_missing"]:
        st.red(
            "cost-gap",
            f"{cost['hours_missing']} hourly cost period(s) missing in the last "
            f"{window} h: {cost['first_missing_hour']:%Y-%m-%d %H:00} .. "
            f"{cost['last_missing_hour']:%Y-%m-%d %H:00} UTC (newest done "
            f"{cost['last_hour']:%Y-%m-%d %H:00})",
            "aos-cost-snapshot-hourly   (backfills every missing hour of the window)",
        )
