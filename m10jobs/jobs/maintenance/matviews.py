"""Materialized-view refresh task of m10-maintenance: one lease `matview_<view>` per view.

REFRESH ... CONCURRENTLY keeps the view readable while it runs; it needs a
unique index, so a view without one is refreshed plainly (readers wait) with a
warning.  A view refreshed less than min_interval_seconds ago is left alone.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from psycopg import sql

from m10jobs.edges.queries import query
from m10jobs.errors import TaskFailed
from m10jobs.jobs.maintenance.settings import MatviewSettings

if TYPE_CHECKING:
    from m10jobs.runner import PassContext


def refresh(ctx: PassContext) -> dict[str, Any]:
    name = ctx.key or ""
    min_interval = ctx.config.settings(MatviewSettings).min_interval_seconds
    info = ctx.conn.execute(query("matview_info"), {"name": name}).fetchone()
    if info is None or not info["is_matview"]:
        raise TaskFailed(
            f"matviews.views names {name!r}, which is not a materialized view in "
            "this database; create it or remove it from the config"
        )
    since = info["since_last_refresh_s"]
    if since is not None and since < min_interval:
        ctx.log.info(
            "%s was refreshed %.0fs ago (< min_interval_seconds %d); skipped",
            name,
            since,
            min_interval,
        )
        return {"view": name, "refreshed": False, "since_last_refresh_s": round(since, 1)}
    concurrently = info["has_unique_index"] and info["relispopulated"]
    if not concurrently:
        ctx.log.warning(
            "%s has no unique index (or is not populated): plain REFRESH, readers "
            "wait until it ends; add a unique index to refresh CONCURRENTLY",
            name,
        )
    if ctx.dry_run:
        return {"view": name, "would_refresh": True, "concurrently": concurrently}
    ident = sql.Identifier(*name.split("."))
    stmt = sql.SQL("REFRESH MATERIALIZED VIEW {}{}").format(
        sql.SQL("CONCURRENTLY " if concurrently else ""), ident
    )
    t0 = time.monotonic()
    with ctx.conn.transaction(), ctx.conn.cursor() as cur:
        ctx.fence(cur)
        cur.execute(stmt)
        ms = int((time.monotonic() - t0) * 1000)
        cur.execute(
            query("matview_record_refresh"),
            {"name": name, "duration_ms": ms, "concurrently": concurrently, "run_id": ctx.run_id},
        )
    ctx.gauge("m10_matview_refresh_seconds", ms / 1000, "Duration of the last refresh.", view=name)
    return {"view": name, "refreshed": True, "concurrently": concurrently, "duration_ms": ms}
