"""Health of the daily stats export (`m10 status`, ARTIFACTS): this host's newest
day and its marker."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from m10jobs.health import Checks, Status, runs_recorded

checks = Checks()


@checks("artifacts")
def check_stats(st: Status, config: Any, conn: Any) -> None:
    from m10jobs.cli.ops.postflight import stats_today
    from m10jobs.errors import BadInput
    from m10jobs.jobs.stats.statsfile import (
        marker_mismatches,
        marker_path,
        month_files,
        parse,
        read_marker,
    )

    log_dir = Path(config.log_dir)
    files = month_files(log_dir)
    yesterday = stats_today(config) - timedelta(days=1)
    info: dict[str, Any] = {"dir": str(log_dir), "newest_day": None, "marker": None}
    st.artifacts["daily_stats"] = info
    elsewhere = st.elsewhere("m10-daily-stats", runs_recorded(config))
    if elsewhere:
        info["elsewhere"] = elsewhere
    if not files:
        if not elsewhere:
            st.red("stats-stale", f"no m10_stats_YYYY-MM.csv in {log_dir}", "m10-daily-stats")
        return
    newest = files[-1]
    info["file"] = newest.name
    try:
        stats = parse(newest)
        marker = read_marker(newest)
    except BadInput as exc:
        info["marker"] = "unreadable"
        st.red(
            "stats-corrupt",
            str(exc),
            f"restore {newest.name} from object storage (m10/stats/), or move it away and "
            f"run m10-daily-stats --start-date {newest.name[10:17]}-01",
        )
        return
    info["newest_day"] = stats.last_date.isoformat() if stats.last_date else None
    mismatches = marker_mismatches(stats, marker)
    info["marker"] = "; ".join(mismatches) or "matches"
    if mismatches:
        st.red(
            "stats-marker",
            f"{newest.name}: {'; '.join(mismatches)}",
            f"rm {marker_path(newest)}; m10-daily-stats",
        )
    if (stats.last_date is None or stats.last_date < yesterday) and not elsewhere:
        st.red(
            "stats-stale",
            f"newest stats day is {info['newest_day']}, expected yesterday ({yesterday})",
            "m10-daily-stats   (backfills every missing day)",
        )
