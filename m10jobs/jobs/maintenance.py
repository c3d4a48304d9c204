"""m10-maintenance: the orchestrator (seed: orchestrator.py), every 5 minutes.

Runs its tasks in this fixed order, each under its own lease, so two hosts
share the work and one stuck task does not block the others:

  1. reclaim_gc   garbage-collect lapsed leases first, so the tasks below
                  are not blocked by a dead holder's row
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from m10jobs.edges.queries import query
from m10jobs.registry import Flow, Job, Task

if TYPE_CHECKING:
    from m10jobs.runner import PassContext


def reclaim_gc(ctx: PassContext) -> dict[str, Any]:
    if ctx.dry_run:
        expired = ctx.conn.execute(query("count_expired_locks")).fetchone()["expired"]
        return {"would_reclaim": expired}
    reclaimed = ctx.conn.execute(query("reclaim_expired_locks")).fetchone()["reclaimed"]
    ctx.gauge("m10_locks_reclaimed", reclaimed, "Lapsed leases deleted by the last reclaim_gc.")
    if reclaimed:
        ctx.log.info("reclaimed %d expired lease(s)", reclaimed)
    return {"reclaimed": reclaimed}


JOB = Job(
    script="m10-maintenance",
    summary="Maintenance orchestrator: GC expired leases (more tasks to come).",
    example="m10-maintenance --dry-run",
    schedule="*:0/5",
    after=("postgresql.service", "redis-server.service"),
    wants=("network-online.target",),
    tasks=(
        Task("reclaim_gc", "reclaim_gc", reclaim_gc, "Delete lapsed leases."),
    ),
    produces=(
        Flow("lock", "reclaim_gc", "m10_recovery.distributed_locks",
             "Expired lock garbage collection", ("lock cleanup task",)),
    ),
    consumes=("m10_recovery.distributed_locks",),
)
