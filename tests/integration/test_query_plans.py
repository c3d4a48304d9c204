"""Every recurring named query on a production-shaped database (200k outbox and
replay_log rows, fresh statistics): EXPLAIN ANALYZE it (in a transaction that
is rolled back) and fail on a sequential scan of a big table or a walk over a
large part of one.  Catches plan regressions without the 10M data set of
`make bench-scale`.

A new named query must be added to PARAMS (with realistic parameters) or to
OPERATOR_ONLY (with why it is not recurring): the coverage test fails otherwise.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from benchmarks.scale_data import Shape, fill
from m10jobs.devenv.services import Postgres
from m10jobs.edges.queries import _all, query

N = 200_000
SHAPE = Shape.of(N)
PENDING_FROM = N - N // 10 + 1  # scale_data: the newest 10 % is pending
BIG = {"outbox": SHAPE.outbox, "replay_log": SHAPE.replay_log,
       "dead_letter_archive": SHAPE.dead_letters, "cost_records": SHAPE.cost_records}
# A recurring query may read what it answers (a backlog count reads the backlog) but never
# most of a big table, and never discard more than a tenth of one in filters.
MAX_READ = 0.5
MAX_DISCARDED = 0.1

NOW = datetime.now(UTC)
HOUR = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
DAY = NOW.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
BATCH = list(range(PENDING_FROM, PENDING_FROM + 1000))
LEASE = {"name": "m10:outbox_processor", "holder": "h:1:r", "token": 1, "ttl": 300}
DL_ROW = {"dl_stream": "m10:dead_letter", "dl_entry_id": "9-9", "source_stream": "m10:outbox",
          "source_entry_id": None, "event_id": 10, "idempotency_key": "k:10",
          "event_type": "order.created", "aggregate_type": "order", "aggregate_id": "1",
          "payload": "{}", "fields": Jsonb({}), "reason": "x", "delivery_count": 3,
          "dead_lettered_at": None, "lineage_key": "k:10"}
TENANTS = {"tenants": ["t1", "t2"], "categories": ["c1", "c2"]}

PARAMS: dict[str, dict[str, Any]] = {
    # leases (every pass)
    "acquire_lock": LEASE, "extend_lock": LEASE, "release_lock": LEASE,
    "assert_lease": LEASE, "lease_held": LEASE, "lock_holder": LEASE,
    "bound_idle_transactions": {"ms": 5000}, "reclaim_expired_locks": {},
    # outbox processor (every minute, every batch)
    "outbox_claim": {"after": 0, "limit": 1000},
    "outbox_mark_published": {"ids": BATCH, "streams": ["m10:outbox"] * 1000,
                              "entry_ids": [f"{i}-0" for i in BATCH], "token": 1,
                              "holder": "h"},
    "outbox_mark_failed": {"ids": BATCH[:100], "errors": ["e"] * 100, "delays": [5.0] * 100},
    "outbox_mark_dead_lettered": {"ids": BATCH[:10], "reasons": ["r"] * 10,
                                  "entry_ids": [f"{i}-1" for i in BATCH[:10]],
                                  "sources": ["m10:outbox"] * 10,
                                  "fields": [Jsonb({})] * 10, "dl_stream": "m10:dead_letter"},
    "outbox_backlog": {},
    # synthetic traffic, canary (every 5-30 min)
    "synthetic_enqueue": {"payload": "{}", "key": "syn:1"},
    "synthetic_recent": {"lookback": 7200},
    "canary_statement_timeout": {"ms": "5000"}, "canary_outbox_backlog": {},
    "canary_dead_letters": {"window_s": 3600},
    # maintenance (every 5 min)
    "outbox_leader_health": {"name": "m10:outbox_processor"},
    "dl_archive_insert": DL_ROW,
    "dl_unreconciled": {"limit": 100},
    "dl_processed_elsewhere": {"event_id": 10, "idempotency_key": "k:10",
                               "source_stream": "m10:outbox", "source_entry_id": "10-0"},
    "dl_duplicate_of": {"lineage_key": "k:10", "id": 1, "idempotency_key": "k:10",
                        "event_id": 10, "source_stream": "m10:outbox", "source_entry_id": None},
    "dl_replays_done": {"lineage_key": "k:10"},
    "dl_enqueue_replay": {"event_type": "e", "payload": Jsonb({}), "aggregate_type": "order",
                          "aggregate_id": "1", "idempotency_key": "k:10#replay1"},
    "dl_record_outcome": {"outcome": "abandoned", "attempts": 1, "replay_event_id": None,
                          "id": SHAPE.dead_letters},
    "matview_info": {"name": "m10_recovery.outbox"},
    "matview_record_refresh": {"name": "v", "duration_ms": 1, "concurrently": True,
                               "run_id": "r"},
    "retention_interrupted": {"run_id": "r"},
    "retention_start": {"run_id": "r", "policy": "outbox", "target": "t", "max_age_s": 86400,
                        "archive_location": "x"},
    "retention_progress": {"id": 1, "archived": 1, "deleted": 1},
    "retention_finish": {"id": 1, "status": "succeeded", "error": None},
    # daily stats, cost snapshots
    "daily_stats": {"lo": DAY, "hi": DAY + timedelta(days=1)},
    "cost_source_default": {"period_start": HOUR, "period_end": HOUR + timedelta(hours=1)},
    "cost_db_now": {},
    "cost_first_period": {"granularity": "hour"},
    "cost_done_periods": {"granularity": "hour", "since": DAY, "end": NOW},
    "cost_history": {"granularity": "hour", "since": DAY},
    "cost_upsert_snapshots": {"granularity": "hour", "period_start": HOUR, "token": 1,
                              **TENANTS, "amounts": [1, 2], "counts": [1, 2]},
    "cost_delete_stale_snapshots": {"granularity": "hour", "period_start": HOUR, **TENANTS},
    "cost_upsert_period": {"granularity": "hour", "period_start": HOUR, "rows": 1,
                           "amount": 1, "records": 1, "mismatches": 0, "token": 1},
    "cost_hours_done": {"day_start": DAY, "day_end": DAY + timedelta(days=1)},
    "cost_day_from_hours": {"day_start": DAY, "day_end": DAY + timedelta(days=1)},
    "cost_baseline": {"window_start": DAY - timedelta(days=28), "day_start": DAY},
    "cost_upsert_baseline": {"day": DAY.date(), "tenant_id": "t1", "category": "c1",
                             "window_days": 28, "days_observed": 28, "mean_usd": 1,
                             "stddev_usd": 0, "token": 1},
    "cost_delete_stale_baselines": {"day": DAY.date(), **TENANTS},
    "cost_upsert_anomaly": {"day": DAY.date(), "tenant_id": "t1", "category": "c1",
                            "amount_usd": 9, "mean_usd": 1, "stddev_usd": 1,
                            "threshold_usd": 4, "k": 3, "min_amount_usd": 1, "token": 1},
    "cost_delete_cleared_anomalies": {"day": DAY.date(), **TENANTS},
    "cost_anomalies_on_day": {"day": DAY.date()},
}
# retention batches: the first batch of each table policy, and one in the middle
for _policy, _age in (("replay_log", 7), ("dead_letter_archive", 7), ("outbox", 7),
                      ("outbox_dead_lettered", 7), ("retention_jobs", 7)):
    _cut = NOW - timedelta(days=_age)
    PARAMS[f"retention_upto_{_policy}"] = {"cutoff": _cut, "after": N // 3, "limit": 5000}
    PARAMS[f"retention_copy_{_policy}"] = {"cutoff": _cut, "after": N // 3,
                                           "upto": N // 3 + 5000}

OPERATOR_ONLY = {
    # run by hand (`m10 ...`), by --dry-run, or once per operator action
    "list_locks", "force_release_lock", "count_expired_locks",
    "outbox_status_extra", "outbox_event", "outbox_retry_event", "outbox_problem_events",
    "dl_count_unreconciled", "dl_get", "dl_list", "retention_history",
    "retention_count_replay_log", "retention_count_dead_letter_archive",
    "retention_count_outbox", "retention_count_outbox_dead_lettered",
    "retention_count_retention_jobs",
    "cost_show_days", "cost_show_baselines", "cost_show_anomalies", "cost_show_hours",
    "cost_status",
}


@pytest.fixture(scope="module")
def big_db(pg: Postgres) -> Iterator[str]:
    name = f"plans{os.getpid()}"
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name} TEMPLATE m10_template")
    dsn = pg.dsn_for(name)
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        fill(c, SHAPE)
    yield dsn


def test_every_named_query_is_checked_or_declared_operator_only() -> None:
    names = set(_all())
    assert not (set(PARAMS) & OPERATOR_ONLY)
    assert names - set(PARAMS) - OPERATOR_ONLY == set(), "add the new query to PARAMS"
    assert set(PARAMS) | OPERATOR_ONLY <= names, "a listed query no longer exists"


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def problems(plan: dict[str, Any]) -> list[str]:
    """What a recurring query must not do to a big table."""
    found = []
    for node in _nodes(plan):
        table = node.get("Relation Name")
        loops = node.get("Actual Loops", 1)
        discarded = loops * sum(node.get(k, 0) for k in (
            "Rows Removed by Filter", "Rows Removed by Index Recheck",
            "Rows Removed by Join Filter"))
        if table in BIG and node["Node Type"] == "Seq Scan":
            found.append(f"Seq Scan on {table}")
        if table in BIG and loops * node.get("Actual Rows", 0) > MAX_READ * BIG[table]:
            found.append(f"{node['Node Type']} reads {loops * node['Actual Rows']} rows of "
                         f"{table}")
        limit = MAX_DISCARDED * min(BIG.values()) if table is None else \
            MAX_DISCARDED * BIG.get(table, float("inf"))
        if discarded > limit:
            found.append(f"{node['Node Type']} on {table or 'a join'} discards {discarded} rows")
    return found


def explain(conn: psycopg.Connection[dict[str, Any]], sql: str,
            params: dict[str, Any]) -> dict[str, Any]:
    inner = re.fullmatch(r"(?s)COPY \((.*)\) TO STDOUT;?", sql.strip())
    body = (inner.group(1) if inner else sql).strip().rstrip(";")
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL statement_timeout = '20s'")
        conn.execute("SET LOCAL jit = off")  # as m10jobs.edges.db connects
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + body, params).fetchone()
    plan = row["QUERY PLAN"]
    return (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]


def test_recurring_queries_touch_no_big_table_wholesale(big_db: str) -> None:
    bad = {}
    with psycopg.connect(big_db, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SELECT m10_recovery.acquire_lock('m10:outbox_processor', 'h:1:r', 300)")
        for name, params in sorted(PARAMS.items()):
            found = problems(explain(conn, query(name), params))
            if found:
                bad[name] = found
    assert bad == {}


OLD_CLAIM = """
WITH held AS MATERIALIZED (
    SELECT coalesce(aggregate_type, '') AS agg_type, aggregate_id AS agg_id, min(id) AS first_id
      FROM m10_recovery.outbox
     WHERE status = 'pending' AND attempts > 0 AND next_attempt_at > now()
       AND aggregate_id IS NOT NULL
     GROUP BY 1, 2)
SELECT o.id FROM m10_recovery.outbox o
 WHERE o.status = 'pending' AND o.id > 0 AND o.next_attempt_at <= now()
   AND NOT EXISTS (SELECT 1 FROM held h WHERE h.agg_id = o.aggregate_id
                      AND h.agg_type = coalesce(o.aggregate_type, '') AND h.first_id < o.id)
 ORDER BY o.id LIMIT 1000"""


def test_the_check_catches_what_the_issue_measured(big_db: str) -> None:
    """The old claim (nested loop over every held aggregate) and health check
    (min(created_at) walks published rows), a count over a whole table and a filter
    on an unindexed column are all flagged."""
    old_health = "SELECT min(created_at) FROM m10_recovery.outbox WHERE status = 'pending'"
    with psycopg.connect(big_db, autocommit=True, row_factory=dict_row) as conn:
        assert problems(explain(conn, old_health, {}))
        assert problems(explain(conn, OLD_CLAIM, {}))
        assert problems(explain(conn, "SELECT count(*) FROM m10_recovery.replay_log", {}))
        assert problems(explain(conn, "SELECT * FROM m10_recovery.outbox "
                                      "WHERE last_error = 'x'", {}))
