"""m10-maintenance: the orchestrator (seed: orchestrator.py), every 5 minutes.

Runs its tasks in this fixed order, each under its own lease, so two hosts
share the work and one stuck task does not block the others.  A failing task
does not stop the ones after it; a task whose lease is held elsewhere is
skipped (exit 0 overall unless every task was skipped: 75; any failure: 1).

  1. reclaim_gc         (lease reclaim_gc) report the m10:outbox_processor
                        leader's health, then garbage-collect lapsed leases, so
                        the tasks below are not blocked by a dead holder's row
  2. dl_route           (lease dl_reconcile) move pending entries past the
                        delivery/idle limits to the dead-letter stream
  3. dl_archive         (lease dl_reconcile) dead-letter stream -> dead_letter_archive
  4. dl_reconcile       (lease dl_reconcile) already_processed / replayed / abandoned
  5. matview_refresh    (lease matview_<view>, one per configured view)
  6. retention_cleanup  (lease retention_cleanup) archive + delete old rows and files

Route and archive come before reconcile so a poison message goes pending ->
dead letter -> archive -> reconciled in one pass; retention runs last so it
never removes what an earlier task of the same pass still needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from m10jobs.edges.queries import query
from m10jobs.jobs import maint_deadletters as dl
from m10jobs.jobs import maint_matviews as mv
from m10jobs.jobs import maint_retention as retention
from m10jobs.jobs.outbox_processor import DEAD_LETTER_STREAM
from m10jobs.jobs.outbox_processor import LOCK as OUTBOX_LOCK
from m10jobs.registry import Flow, Job, Task
from m10jobs.settings import setting

if TYPE_CHECKING:
    from m10jobs.runner import PassContext



@dataclass(frozen=True)
class MaintenanceSettings:
    """[maintenance]: the orchestrator's own checks."""

    SECTION: ClassVar[str] = "maintenance"

    outbox_stale_seconds: int = setting(600, "oldest pending outbox event older than this "
                                        "(or no live leader) is reported unhealthy", min=1)


def outbox_leader_health(ctx: PassContext) -> dict[str, Any]:
    """State of the outbox processor's lease and the backlog it leaves (seed: the
    orchestrator consumes that lock).  Warns when events wait with no live leader."""
    row = ctx.conn.execute(query("outbox_leader_health"), {"name": OUTBOX_LOCK}).fetchone()
    stale_after = ctx.config.settings(MaintenanceSettings).outbox_stale_seconds
    live = row["holder_id"] is not None and row["expires_in_s"] > 0
    state = "free" if row["holder_id"] is None else "live" if live else "expired"
    oldest = row["oldest_pending_age_s"]
    health = {"lease": state, "holder": row["holder_id"], "fencing_token": row["fencing_token"],
              "pending": row["pending"],
              "oldest_pending_age_s": round(oldest, 1) if oldest is not None else None}
    health["healthy"] = state != "expired" and (oldest is None or oldest < stale_after)
    if not health["healthy"]:
        ctx.log.warning("outbox processor looks unhealthy: lease %s, %d pending event(s), "
                        "oldest %.0fs; check `systemctl status m10-outbox-processor` and "
                        "`m10 locks list`", state, row["pending"], oldest or 0)
    ctx.gauge("m10_outbox_processor_lease_live", 1 if state == "live" else 0,
              "1 while the outbox processor holds a live lease.")
    ctx.gauge("m10_outbox_pending_events", row["pending"], "Outbox events not yet published.")
    ctx.gauge("m10_outbox_oldest_pending_age_seconds", oldest or 0,
              "Age of the oldest unpublished outbox event.")
    return health


def reclaim_gc(ctx: PassContext) -> dict[str, Any]:
    health = outbox_leader_health(ctx)
    if ctx.dry_run:
        expired = ctx.conn.execute(query("count_expired_locks")).fetchone()["expired"]
        return {"would_reclaim": expired, "outbox_processor": health}
    reclaimed = ctx.conn.execute(query("reclaim_expired_locks")).fetchone()["reclaimed"]
    ctx.gauge("m10_locks_reclaimed", reclaimed, "Lapsed leases deleted by the last reclaim_gc.")
    if reclaimed:
        ctx.log.info("reclaimed %d expired lease(s)", reclaimed)
    return {"reclaimed": reclaimed, "outbox_processor": health}


JOB = Job(
    script="m10-maintenance",
    summary="Maintenance orchestrator: lease GC and outbox health, dead-letter route/archive/"
            "reconcile, matview refresh, retention.",
    example="m10-maintenance --dry-run",
    schedule="*:0/5",
    after=("postgresql.service", "redis-server.service"),
    wants=("network-online.target",),
    tasks=(
        Task("reclaim_gc", "reclaim_gc", reclaim_gc,
             "Report the outbox leader's health, delete lapsed leases."),
        Task("dl_route", dl.LOCK, dl.route,
             "Move pending stream entries past their delivery/idle limits to the dead-letter "
             "stream."),
        Task("dl_archive", dl.LOCK, dl.archive,
             "Store dead-letter stream entries in dead_letter_archive, then remove them."),
        Task("dl_reconcile", dl.LOCK, dl.reconcile,
             "Reconcile archived dead letters: already processed, replayed, or abandoned."),
        Task("matview_refresh", "matview_{key}", mv.refresh,
             "Refresh each configured materialized view (CONCURRENTLY when possible).",
             keys=mv.views),
        Task("retention_cleanup", "retention_cleanup", retention.cleanup,
             "Archive and delete rows and files past their retention age."),
    ),
    produces=(
        Flow("lock", "reclaim_gc", "m10_recovery.distributed_locks",
             "Expired lock garbage collection", ("lock cleanup task",)),
        Flow("lock", "dl_reconcile", "m10_recovery.distributed_locks",
             "Dead-letter routing, archive and reconciliation", ("reconcile_dl.py",)),
        Flow("lock", "matview_*", "m10_recovery.distributed_locks",
             "Per-view refresh coordination", ("matview refresh tasks",)),
        Flow("lock", "retention_cleanup", "m10_recovery.distributed_locks",
             "Cleanup job coordination", ("retention_archive.py",)),
        Flow("stream", DEAD_LETTER_STREAM, "Redis stream",
             "Dead letters awaiting archive", ("dl_archive",)),
        Flow("checkpoint", "dead_letter_archive", "m10_recovery.dead_letter_archive",
             "DL message storage", ("retention_archive.py", "reconcile_dl.py")),
        Flow("table", "retention_jobs", "m10_recovery.retention_jobs",
             "Archive operation metadata", ("m10 retention history",)),
        Flow("file", "retention archive", "$M10_STATE_DIR/retention-archive/ or "
             "s3://$M10_R2_BUCKET/retention/", "Compressed JSON lines of deleted rows"),
    ),
    consumes=("m10_recovery.distributed_locks", OUTBOX_LOCK, "m10_recovery.replay_log",
              "m10_recovery.outbox", DEAD_LETTER_STREAM, ".uploaded", ".processed",
              "latest_report.json"),
    settings=(MaintenanceSettings, dl.DeadLetterSettings, mv.MatviewSettings,
              retention.RetentionSettings),
)
