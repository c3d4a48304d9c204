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
  6. retention_cleanup  (lease retention_cleanup) archive + delete old table rows
  7. retention_files    (lease retention_cleanup@<host>) delete this host's old files:
                        host-local state, so every host runs it, not only the one
                        that wins the cluster-wide retention_cleanup lease

Route and archive come before reconcile so a poison message goes pending ->
dead letter -> archive -> reconciled in one pass; retention runs last so it
never removes what an earlier task of the same pass still needed.
"""

from m10jobs.jobs.outbox import DEAD_LETTER_STREAM
from m10jobs.jobs.outbox import LOCK as OUTBOX_LOCK
from m10jobs.registry import Flow, Job, Task

DL_LOCK = "dl_reconcile"
RETENTION_LOCK = "retention_cleanup"
"""Both retention tasks' lock: retention_cleanup (tables) and retention_cleanup@<host> (files)."""
# Its tables and the matview keys are named, not imported: --help and a lock-busy start
# without a config file never build them.
SETTINGS = "m10jobs.jobs.maintenance.settings"

JOB = Job(
    script="m10-maintenance",
    summary="Maintenance orchestrator: lease GC and outbox health, dead-letter route/archive/"
    "reconcile, matview refresh, retention.",
    example="m10-maintenance --dry-run",
    schedule="*:0/5",
    after=("postgresql.service", "redis-server.service"),
    wants=("network-online.target",),
    tasks=(
        Task(
            "reclaim_gc",
            "reclaim_gc",
            "m10jobs.jobs.maintenance.gc:reclaim_gc",
            "Report the outbox leader's health, delete lapsed leases.",
        ),
        Task(
            "dl_route",
            DL_LOCK,
            "m10jobs.jobs.maintenance.deadletters:route",
            "Move pending stream entries past their delivery/idle limits to the dead-letter "
            "stream.",
        ),
        Task(
            "dl_archive",
            DL_LOCK,
            "m10jobs.jobs.maintenance.deadletters:archive",
            "Store dead-letter stream entries in dead_letter_archive, then remove them.",
        ),
        Task(
            "dl_reconcile",
            DL_LOCK,
            "m10jobs.jobs.maintenance.deadletters:reconcile",
            "Reconcile archived dead letters: already processed, replayed, or abandoned.",
        ),
        Task(
            "matview_refresh",
            "matview_{key}",
            "m10jobs.jobs.maintenance.matviews:refresh",
            "Refresh each configured materialized view (CONCURRENTLY when possible).",
            keys=f"{SETTINGS}:views",
        ),
        Task(
            "retention_cleanup",
            RETENTION_LOCK,
            "m10jobs.jobs.maintenance.retention:cleanup",
            "Archive and delete table rows past their retention age.",
        ),
        Task(
            "retention_files",
            RETENTION_LOCK,
            "m10jobs.jobs.maintenance.retention_files:cleanup_files",
            "Delete this host's uploaded fallback files, old stats CSVs and canary reports.",
            scope="host",
        ),
    ),
    produces=(
        Flow(
            "lock",
            "reclaim_gc",
            "m10_recovery.distributed_locks",
            "Expired lock garbage collection",
            ("reclaim_gc",),
        ),
        Flow(
            "lock",
            "dl_reconcile",
            "m10_recovery.distributed_locks",
            "Dead-letter routing, archive and reconciliation",
            ("dl_route", "dl_archive", "dl_reconcile", "m10 dl replay"),
        ),
        Flow(
            "lock",
            "matview_*",
            "m10_recovery.distributed_locks",
            "Per-view refresh coordination",
            ("matview_refresh",),
        ),
        Flow(
            "lock",
            "retention_cleanup",
            "m10_recovery.distributed_locks",
            "Cleanup job coordination: table rows cluster-wide, files per host",
            ("retention_cleanup", "retention_files"),
        ),
        Flow(
            "stream",
            DEAD_LETTER_STREAM,
            "Redis stream",
            "Dead letters awaiting archive",
            ("dl_archive",),
        ),
        Flow(
            "checkpoint",
            "dead_letter_archive",
            "m10_recovery.dead_letter_archive",
            "DL message storage",
            ("dl_reconcile", "retention_cleanup", "m10 dl list"),
        ),
        Flow(
            "table",
            "retention_jobs",
            "m10_recovery.retention_jobs",
            "Archive operation metadata",
            ("m10 retention history",),
        ),
        Flow(
            "file",
            "retention archive",
            "$M10_STATE_DIR/retention-archive/ or s3://$M10_R2_BUCKET/retention/",
            "deleted rows as zstd'd binary COPY (*.pgcopy.zst; `m10 retention show`)",
        ),
    ),
    consumes=(
        "m10_recovery.distributed_locks",
        OUTBOX_LOCK,
        "m10_recovery.replay_log",
        "m10_recovery.outbox",
        DEAD_LETTER_STREAM,
        ".uploaded",
        ".processed",
        "latest_report.json",
    ),
    settings=(
        f"{SETTINGS}:MaintenanceSettings",
        f"{SETTINGS}:DeadLetterSettings",
        f"{SETTINGS}:MatviewSettings",
        f"{SETTINGS}:RetentionSettings",
    ),
)
