"""reclaim_gc: report the outbox leader's health, then delete lapsed leases."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from m10jobs.edges.queries import one, query
from m10jobs.jobs.maintenance.settings import MaintenanceSettings
from m10jobs.jobs.outbox.settings import LOCK as OUTBOX_LOCK

if TYPE_CHECKING:
    from m10jobs.runner import PassContext


def outbox_leader_health(ctx: PassContext) -> dict[str, Any]:
    """State of the outbox processor's lease and the backlog it leaves (seed: the
    orchestrator consumes that lock).  Warns when events wait with no live leader."""
    row = one(ctx.conn.execute(query("outbox_leader_health"), {"name": OUTBOX_LOCK}))
    stale_after = ctx.config.settings(MaintenanceSettings).outbox_stale_seconds
    live = row["holder_id"] is not None and row["expires_in_s"] > 0
    state = "free" if row["holder_id"] is None else "live" if live else "expired"
    oldest = row["oldest_pending_age_s"]
    health = {
        "lease": state,
        "holder": row["holder_id"],
        "fencing_token": row["fencing_token"],
        "pending": row["pending"],
        "oldest_pending_age_s": round(oldest, 1) if oldest is not None else None,
    }
    health["healthy"] = state != "expired" and (oldest is None or oldest < stale_after)
    if not health["healthy"]:
        ctx.log.warning(
            "outbox processor looks unhealthy: lease %s, %d pending event(s), "
            "oldest %.0fs; check `systemctl status m10-outbox-processor` and "
            "`m10 locks list`",
            state,
            row["pending"],
            oldest or 0,
        )
    ctx.gauge(
        "m10_outbox_processor_lease_live",
        1 if state == "live" else 0,
        "1 while the outbox processor holds a live lease.",
    )
    ctx.gauge("m10_outbox_pending_events", row["pending"], "Outbox events not yet published.")
    ctx.gauge(
        "m10_outbox_oldest_pending_age_seconds",
        oldest or 0,
        "Age of the oldest unpublished outbox event.",
    )
    return health


def reclaim_gc(ctx: PassContext) -> dict[str, Any]:
    health = outbox_leader_health(ctx)
    if ctx.dry_run:
        expired = one(ctx.conn.execute(query("count_expired_locks")))["expired"]
        return {"would_reclaim": expired, "outbox_processor": health}
    reclaimed = one(ctx.conn.execute(query("reclaim_expired_locks")))["reclaimed"]
    ctx.gauge("m10_locks_reclaimed", reclaimed, "Lapsed leases deleted by the last reclaim_gc.")
    for lease in ctx.conn.execute(query("list_locks")).fetchall():
        ctx.gauge(
            "m10_lease_held_seconds",
            lease["age_s"],
            "How long each live lease has been held (a stuck holder keeps growing it).",
            lock=lease["lock_name"],
        )
    if reclaimed:
        ctx.log.info("reclaimed %d expired lease(s)", reclaimed)
    return {"reclaimed": reclaimed, "outbox_processor": health}
