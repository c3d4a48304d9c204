"""Production-shaped data, generated set-based (one INSERT ... SELECT per table).

Shared by the plan test (tests/integration/test_query_plans.py, ~200k rows) and
`make bench-scale` (100k and 10M rows).  The shape follows a platform that ran
for a while behind a broken consumer: the newest 10 % of the outbox is pending,
10 % of the pending aggregates are held back by an event waiting for a retry,
10 % dead-lettered (each with its dead_letter_archive row, half reconciled), the
rest published; replay_log as long as the outbox; cost records over twice the span.
A steady rate: a bigger table is a longer history (Shape.days).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from m10jobs.jobs.maintenance.retention import SPAN_POLICIES, TABLE_POLICIES


@dataclass(frozen=True)
class Shape:
    outbox: int
    replay_log: int
    dead_letters: int
    cost_records: int
    pending: int | None = None
    """Newest outbox rows left pending (default a tenth of the outbox)."""
    aggregates: int | None = None
    """Aggregates the pending rows cycle through (default a tenth of them); the first
    pending event of every 10th one waits for a retry and holds its aggregate back."""

    @property
    def days(self) -> float:
        """History the rows span: a steady 100k outbox rows per 30 days (so a day's or an
        hour's volume, what daily stats and cost snapshots read, is the same at every
        size; a bigger table is a longer history), at least 30 days."""
        return max(30.0, 30.0 * self.outbox / 100_000)

    @classmethod
    def of(cls, rows: int) -> Shape:
        """The issue's 10M shape (10M/10M/1M/5M) scaled to `rows` outbox rows."""
        return cls(rows, rows, rows // 10, rows // 2)


OUTBOX = """
INSERT INTO m10_recovery.outbox
       (id, event_type, aggregate_type, aggregate_id, payload, idempotency_key, status, attempts,
        next_attempt_at, last_error, created_at, published_at, dead_lettered_at,
        stream, stream_entry_id)
OVERRIDING SYSTEM VALUE
SELECT g, 'order.created', 'order', (g %% %(aggs)s)::text,
       jsonb_build_object('n', g, 'note', 'abcdefghijklmnopqrstuvwxyz'), 'k:' || g,
       st, CASE WHEN held_first THEN 3 WHEN st = 'pending' THEN 0 ELSE 1 END,
       CASE WHEN held_first THEN now() + interval '1 hour' ELSE t END,
       CASE WHEN held_first OR st = 'dead_lettered' THEN 'boom' END,
       t, CASE WHEN st = 'published' THEN t + interval '1 second' END,
       CASE WHEN st = 'dead_lettered' THEN t + interval '1 hour' END,
       CASE WHEN st = 'published' THEN 'm10:outbox' END,
       CASE WHEN st = 'published' THEN g || '-0' END
  FROM (SELECT g, t,
               CASE WHEN g > %(n)s - %(pending)s THEN 'pending'
                    WHEN g %% 10 = 0 THEN 'dead_lettered' ELSE 'published' END AS st,
               -- the first pending event of every 10th aggregate failed and waits
               g > %(n)s - %(pending)s AND g <= %(n)s - %(pending)s + %(aggs)s
                 AND (g %% %(aggs)s) %% 10 = 0 AS held_first
          FROM generate_series(1, %(n)s) g,
               LATERAL (SELECT now() - interval '1 day'
                                 * (%(days)s * (%(n)s - g)::float8 / %(n)s) AS t) tt) s
"""

REPLAY_LOG = """
INSERT INTO m10_recovery.replay_log
       (event_id, idempotency_key, event_type, stream, stream_entry_id, fencing_token,
        holder_id, enqueued_at, published_at)
SELECT g, 'k:' || g, 'order.created', 'm10:outbox', g || '-0', 1, 'h', t, t + interval '1 s'
  FROM generate_series(1, %(n)s) g,
       LATERAL (SELECT now() - interval '1 day' * (%(days)s * (%(n)s - g)::float8 / %(n)s) AS t) tt
"""

DEAD_LETTERS = """
INSERT INTO m10_recovery.dead_letter_archive
       (dl_stream, dl_entry_id, source_stream, source_entry_id, event_id, idempotency_key,
        event_type, aggregate_type, aggregate_id, payload, reason, delivery_count,
        dead_lettered_at, archived_at, reconcile_outcome, reconcile_attempts, reconciled_at,
        lineage_key)
SELECT 'm10:dead_letter', g || '-0', 'm10:outbox', NULL, g * 10, 'k:' || g * 10,
       'order.created', 'order', (g * 10 %% 1000)::text, '{}', 'boom', 8, t, t,
       CASE WHEN g <= %(n)s / 2 THEN 'abandoned' END, CASE WHEN g <= %(n)s / 2 THEN 1 ELSE 0 END,
       CASE WHEN g <= %(n)s / 2 THEN t + interval '5 minutes' END, 'k:' || g * 10
  FROM generate_series(1, %(n)s) g,
       LATERAL (SELECT now() - interval '1 day' * (%(days)s * (%(n)s - g)::float8 / %(n)s) AS t) tt
"""

COST_RECORDS = """
INSERT INTO aos_cost.cost_records (occurred_at, tenant_id, category, amount_usd)
SELECT now() - interval '2 days' * (%(days)s * (%(n)s - g)::float8 / %(n)s),
       't' || (g %% 50), 'c' || (g %% 5),
       (g %% 1000) / 100.0
  FROM generate_series(1, %(n)s) g
"""


_CONSTRAINTS = """
SELECT conname AS name, pg_get_constraintdef(oid) AS def FROM pg_constraint
 WHERE conrelid = %s::regclass AND contype IN ('p', 'u')
"""
_INDEXES = """
SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS def,
       obj_description(indexrelid, 'pg_class') AS comment FROM pg_index
 WHERE indrelid = %s::regclass
   AND indexrelid NOT IN (SELECT conindid FROM pg_constraint WHERE conrelid = %s::regclass)
"""


def _bulk(conn: psycopg.Connection[Any], table: str, sql: str, params: dict[str, Any]) -> None:
    """Insert with the table's indexes dropped, then build them (each in one sorted
    pass: many times faster than maintaining them row by row)."""
    from psycopg import sql as q

    cons = conn.execute(_CONSTRAINTS, (table,)).fetchall()
    idxs = conn.execute(_INDEXES, (table, table)).fetchall()
    tab = q.SQL(table)
    for r in idxs:
        conn.execute(q.SQL("DROP INDEX {}").format(q.SQL(r["name"])))
    for r in cons:
        conn.execute(
            q.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(tab, q.Identifier(r["name"]))
        )
    conn.execute(sql, params)
    for r in cons:
        conn.execute(
            q.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                tab, q.Identifier(r["name"]), q.SQL(r["def"])
            )
        )
    for r in idxs:
        conn.execute(r["def"])
        if r["comment"]:
            conn.execute(
                q.SQL("COMMENT ON INDEX {} IS {}").format(q.SQL(r["name"]), q.Literal(r["comment"]))
            )


def pending_count(shape: Shape) -> int:
    return shape.pending if shape.pending is not None else max(shape.outbox // 10, 10)


def fill(conn: psycopg.Connection[Any], shape: Shape) -> None:
    """Fill a freshly migrated database; ANALYZE so plans see the real sizes."""
    conn.autocommit = True
    conn.execute("SET maintenance_work_mem = '256MB'")
    pending = pending_count(shape)
    aggs = shape.aggregates or max(pending // 10, 1)
    days = shape.days
    _bulk(
        conn,
        "m10_recovery.outbox",
        OUTBOX,
        {"n": shape.outbox, "pending": pending, "aggs": aggs, "days": days},
    )
    conn.execute(
        "SELECT setval(pg_get_serial_sequence('m10_recovery.outbox', 'id'), %s)", (shape.outbox,)
    )
    _bulk(conn, "m10_recovery.replay_log", REPLAY_LOG, {"n": shape.replay_log, "days": days})
    _bulk(
        conn,
        "m10_recovery.dead_letter_archive",
        DEAD_LETTERS,
        {"n": shape.dead_letters, "days": days},
    )
    _bulk(conn, "aos_cost.cost_records", COST_RECORDS, {"n": shape.cost_records, "days": days})
    conn.execute(
        "VACUUM ANALYZE m10_recovery.outbox, m10_recovery.replay_log, "
        "m10_recovery.dead_letter_archive, aos_cost.cost_records"
    )


def recurring_params(shape: Shape) -> dict[str, dict[str, Any]]:
    """Realistic parameters for every recurring named query, on data made by fill(shape)."""
    now = datetime.now(UTC)
    n = shape.outbox
    pending_from = n - pending_count(shape) + 1  # the newest rows are the pending ones
    HOUR = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    DAY = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    BATCH = list(range(pending_from, pending_from + 1000))
    LEASE = {
        "name": "m10:outbox_processor",
        "holder": "h:1:r",
        "token": 1,
        "ttl": 300,
        "session": "bound",
    }
    DL_ROW = {
        "dl_stream": "m10:dead_letter",
        "dl_entry_id": "9-9",
        "source_stream": "m10:outbox",
        "source_entry_id": None,
        "event_id": 10,
        "idempotency_key": "k:10",
        "event_type": "order.created",
        "aggregate_type": "order",
        "aggregate_id": "1",
        "payload": "{}",
        "fields": Jsonb({}),
        "reason": "x",
        "delivery_count": 3,
        "dead_lettered_at": None,
        "lineage_key": "k:10",
        "refusal": None,
    }
    TENANTS = {"tenants": ["t1", "t2"], "categories": ["c1", "c2"]}

    params: dict[str, dict[str, Any]] = {
        # leases (every pass)
        "acquire_lock": LEASE,
        "extend_lock": LEASE,
        "release_lock": LEASE,
        "assert_lease": LEASE,
        "lease_held": LEASE,
        "lock_holder": LEASE,
        "lease_holders": {"names": ["reclaim_gc", "dl_reconcile", "retention_cleanup"]},
        "bound_idle_transactions": {"ms": 5000},
        "reclaim_expired_locks": {},
        # outbox processor (every minute, every batch)
        "outbox_claim": {
            "after": 0,
            "limit": 1000,
            "max_payload_bytes": 1_000_000,
            "preview_chars": 256,
        },
        "outbox_claim_plan": {},
        "outbox_pending_estimate": {},
        "outbox_analyze_lock_timeout": {},
        "outbox_mark_published": {
            "ids": BATCH,
            "streams": ["m10:outbox"] * 1000,
            "entry_ids": [f"{i}-0" for i in BATCH],
            "token": 1,
            "holder": "h",
        },
        "outbox_mark_failed": {"ids": BATCH[:100], "errors": ["e"] * 100, "delays": [5.0] * 100},
        "outbox_mark_dead_lettered": {
            "ids": BATCH[:10],
            "reasons": ["r"] * 10,
            "entry_ids": [f"{i}-1" for i in BATCH[:10]],
            "sources": ["m10:outbox"] * 10,
            "fields": [Jsonb({})] * 10,
            "dl_stream": "m10:dead_letter",
        },
        "outbox_backlog": {},
        "outbox_newest_published": {"ttl": 604800},
        # after Redis lost data (a restart without AOF, a failover): rare, bounded
        "outbox_reconcile_window": {"window": 3600, "limit": 100_000},
        "outbox_republish_fields": {"ids": BATCH[:1000]},
        "outbox_mark_republished": {
            "ids": BATCH[:1000],
            "streams": ["m10:outbox"] * 1000,
            "entry_ids": [f"{i}-2" for i in BATCH[:1000]],
        },
        # synthetic traffic, canary (every 5-30 min)
        "synthetic_enqueue": {"payload": "{}", "key": "syn:1"},
        "synthetic_recent": {"lookback": 7200},
        "canary_statement_timeout": {"ms": "5000"},
        "canary_outbox_backlog": {},
        "canary_dead_letters": {"window_s": 3600},
        # maintenance (every 5 min)
        "outbox_leader_health": {"name": "m10:outbox_processor"},
        "dl_archive_insert": DL_ROW,
        "dl_unreconciled": {"limit": 100, "max_payload_bytes": 1_000_000},
        "dl_processed_elsewhere": {
            "event_id": 10,
            "idempotency_key": "k:10",
            "source_stream": "m10:outbox",
            "source_entry_id": "10-0",
        },
        "dl_duplicate_of": {
            "lineage_key": "k:10",
            "id": 1,
            "idempotency_key": "k:10",
            "event_id": 10,
            "source_stream": "m10:outbox",
            "source_entry_id": None,
        },
        "dl_replays_done": {"lineage_key": "k:10"},
        "dl_enqueue_replay": {
            "event_type": "e",
            "payload": Jsonb({}),
            "aggregate_type": "order",
            "aggregate_id": "1",
            "idempotency_key": "k:10#replay1",
        },
        "dl_record_outcome": {
            "outcome": "abandoned",
            "attempts": 1,
            "replay_event_id": None,
            "id": shape.dead_letters,
            "refusal": None,
        },
        "matview_info": {"name": "m10_recovery.outbox"},
        "matview_record_refresh": {
            "name": "v",
            "duration_ms": 1,
            "concurrently": True,
            "run_id": "r",
        },
        "retention_interrupted": {
            "run_id": "r",
            "policies": ["replay_log", "outbox"],
            "target_prefix": "m10_recovery.",
        },
        "retention_start": {
            "run_id": "r",
            "policy": "outbox",
            "target": "t",
            "max_age_s": 86400,
            "archive_location": "x",
        },
        "retention_progress": {"id": 1, "archived": 1, "deleted": 1},
        "retention_columns": {"table": "m10_recovery.replay_log"},
        "retention_finish": {"id": 1, "status": "succeeded", "error": None},
        # daily stats, cost snapshots
        "daily_stats": {"lo": DAY, "hi": DAY + timedelta(days=1)},
        "cost_source_default": {"period_start": HOUR, "period_end": HOUR + timedelta(hours=1)},
        "db_now": {},
        "db_is_standby": {},
        "cost_first_period": {"granularity": "hour"},
        "cost_done_periods": {"granularity": "hour", "since": DAY, "end": now},
        "cost_history": {"granularity": "hour", "since": DAY},
        "cost_upsert_snapshots": {
            "granularity": "hour",
            "period_start": HOUR,
            "token": 1,
            **TENANTS,
            "amounts": [1, 2],
            "counts": [1, 2],
        },
        "cost_delete_stale_snapshots": {"granularity": "hour", "period_start": HOUR, **TENANTS},
        "cost_upsert_period": {
            "granularity": "hour",
            "period_start": HOUR,
            "rows": 1,
            "amount": 1,
            "records": 1,
            "mismatches": 0,
            "token": 1,
        },
        "cost_hours_done": {"day_start": DAY, "day_end": DAY + timedelta(days=1)},
        "cost_day_from_hours": {"day_start": DAY, "day_end": DAY + timedelta(days=1)},
        "cost_baseline": {"window_start": DAY - timedelta(days=28), "day_start": DAY},
        "cost_upsert_baseline": {
            "day": DAY.date(),
            "tenant_id": "t1",
            "category": "c1",
            "window_days": 28,
            "days_observed": 28,
            "mean_usd": 1,
            "stddev_usd": 0,
            "token": 1,
        },
        "cost_delete_stale_baselines": {"day": DAY.date(), **TENANTS},
        "cost_upsert_anomaly": {
            "day": DAY.date(),
            "tenant_id": "t1",
            "category": "c1",
            "amount_usd": 9,
            "mean_usd": 1,
            "stddev_usd": 1,
            "threshold_usd": 4,
            "k": 3,
            "min_amount_usd": 1,
            "token": 1,
        },
        "cost_delete_cleared_anomalies": {"day": DAY.date(), **TENANTS},
        "cost_anomalies_on_day": {"day": DAY.date()},
        "stats_retained_since": {},
        "stats_last_day": {},
        "stats_days_between": {"first": DAY.date() - timedelta(days=30), "last": DAY.date()},
        "stats_rows_since": {"first": DAY.date() - timedelta(days=30), "last": DAY.date()},
        "stats_store_day": {
            "day": DAY.date(),
            "timezone": "UTC",
            "host": "h",
            "token": 1,
            "outbox_enqueued": 1,
            "outbox_published": 1,
            "publish_latency_p50_ms": 1,
            "publish_latency_p95_ms": 1,
            "dead_lettered": 0,
            "dl_reconciled": 0,
            "retention_rows_deleted": 0,
            "locks_reclaimed": None,
            "synthetic_sent": 0,
            "synthetic_arrived": 0,
        },
        "dl_count_abandoned": {},
        # `m10 status` (a health check: as often as monitoring polls it)
        "status_postgres": {},
        "status_leases": {},
        "status_hosts": {},
        "status_schema_migrations": {},
        # every job's start (the release gate, m10jobs/release.py) and its host record
        "schema_version": {"known": "160"},
        "host_seen": {"host": "h", "release": "0.2.0", "requires": "160", "knows": "160"},
        "status_outbox": {},
        "status_dead_letters": {},
        "status_cost_hours": {"window_hours": 168, "grace_s": 900},
        # every run's end (the run history) and `m10 status`'s last errors
        "history_record": {
            "host": "h",
            "job": "m10-maintenance",
            "run_id": "r",
            "tasks": json.dumps(
                [
                    {
                        "task": "reclaim_gc",
                        "lock_name": "reclaim_gc",
                        "started_ago_s": 1.5,
                        "ended_ago_s": 0.5,
                        "exit_code": 0,
                        "status": "ok",
                        "error": None,
                        "summary": {"reclaimed": 0},
                    }
                ]
            ),
        },
        "history_last_runs": {"jobs": ["m10-maintenance", "m10-canary"], "host": "h"},
        # rollback (every 5 min)
        "rollback_action": {"report_run_id": "r"},
        "rollback_flags_pending": {"host": "h"},
        "rollback_flags_applied": {"report_run_id": "r"},
        "rollback_latest": {},
        "rollback_claim": {
            "report_run_id": "r",
            "host": "h",
            "lock": "m10:rollback",
            "holder": "h",
            "token": 1,
            "run_id": "r",
            "command": "true",
            "verdict": "fail",
            "set_flags": None,
            "cooldown_s": 3600,
        },
        "rollback_finish": {
            "outcome": "succeeded",
            "exit_status": 0,
            "duration_s": 1.0,
            "report_run_id": "r",
            "run_id": "r",
        },
    }
    # retention batches: the first batch of each table policy, and one in the middle
    _cut = now - timedelta(days=7)
    for _policy in TABLE_POLICIES:
        # outbox_dead_lettered walks oldest-first by time: its batches start from id 0
        _after = 0 if _policy == "outbox_dead_lettered" else n // 3
        params[f"retention_upto_{_policy}"] = {"cutoff": _cut, "after": _after, "limit": 5000}
        if _policy in SPAN_POLICIES:
            params[f"retention_span_{_policy}"] = {"after": n // 3, "limit": 5000}
        params[f"retention_copy_{_policy}"] = {
            "cutoff": _cut,
            "after": n // 3,
            "upto": n // 3 + 5000,
        }

    return params


# Named queries run first in the same transaction, as the code runs them (the claim's
# planner settings): the plan check and `make bench-scale` see the plan the job gets.
RUN_AFTER = {"outbox_claim": "outbox_claim_plan"}

# Named queries outside the plan check: run only by hand (`m10 ...`), by --dry-run, once
# per operator action, or not plannable.
OPERATOR_ONLY = {
    # run by hand (`m10 ...`), by --dry-run, or once per operator action
    "list_locks",
    "force_release_lock",
    "count_expired_locks",
    "outbox_status_extra",
    "outbox_analyze",  # not plannable; once a drain, when the statistics predate a burst
    "outbox_event",
    "outbox_retry_event",
    "outbox_problem_events",
    "dl_count_unreconciled",
    "dl_select",
    "dl_discard",
    "dl_list",
    "retention_history",
    "retention_chunk_types",
    "retention_count_replay_log",
    "retention_count_dead_letter_archive",
    "retention_count_outbox",
    "retention_count_outbox_dead_lettered",
    "retention_count_retention_jobs",
    "retention_count_job_runs",
    "history_list",
    "cost_show_days",
    "cost_show_baselines",
    "cost_show_anomalies",
    "cost_show_hours",
    "cost_status",
    # `m10 flows --check` (the access audit), over the catalog
    "audit_app_privileges",
    "audit_lock_table_grants",
    "audit_public_privileges",
    "audit_lock_rows",
    # not a query: no plan to check
    "rollback_lock_ledger",
    "status_session",
    "history_async_commit",
    # `m10 db migrate`, once per migration run
    "migration_marks_exist",
    "stamp_migration_marks",
}
