"""Every recurring named query on a production-shaped database (200k outbox and
replay_log rows, fresh statistics): EXPLAIN ANALYZE it (in a transaction that
is rolled back) and fail on a sequential scan of a big table or a walk over a
large part of one.  Catches plan regressions without the 10M data set of
`make bench-scale`.

A new named query must be added to recurring_params() (with realistic parameters)
or to OPERATOR_ONLY, both in benchmarks/scale_data.py (shared with `make
bench-scale`): the coverage test fails otherwise.
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
from pytest_postgresql.executors import NoopExecutor

from benchmarks.scale_data import OPERATOR_ONLY, RUN_AFTER, Shape, fill, recurring_params
from devenv.services import Postgres
from m10jobs.edges.queries import _all, query
from m10jobs.jobs.outbox.process import analyze_if_stale

N = 200_000
SHAPE = Shape.of(N)
BIG = {
    "outbox": SHAPE.outbox,
    "replay_log": SHAPE.replay_log,
    "dead_letter_archive": SHAPE.dead_letters,
    "cost_records": SHAPE.cost_records,
}
# A recurring query may read what it answers (a backlog count reads the backlog) but never
# most of a big table, and never discard more than a tenth of one in filters.
MAX_READ = 0.5
MAX_DISCARDED = 0.1
PARAMS = recurring_params(SHAPE)


@pytest.fixture(scope="module")
def big_db(pg: Postgres, pg_template: NoopExecutor) -> Iterator[str]:
    name = f"plans{os.getpid()}"
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name} TEMPLATE {pg_template.template_dbname}")
    dsn = pg.dsn_for(name)
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        fill(c, SHAPE)
    yield dsn


def test_every_named_query_is_checked_or_declared_operator_only() -> None:
    names = set(_all())
    assert not (set(PARAMS) & OPERATOR_ONLY)
    assert names - set(PARAMS) - OPERATOR_ONLY == set(), "add it to recurring_params()"
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
        discarded = loops * sum(
            node.get(k, 0)
            for k in (
                "Rows Removed by Filter",
                "Rows Removed by Index Recheck",
                "Rows Removed by Join Filter",
            )
        )
        if table in BIG and node["Node Type"] == "Seq Scan":
            found.append(f"Seq Scan on {table}")
        if table in BIG and loops * node.get("Actual Rows", 0) > MAX_READ * BIG[table]:
            found.append(f"{node['Node Type']} reads {loops * node['Actual Rows']} rows of {table}")
        limit = (
            MAX_DISCARDED * min(BIG.values())
            if table is None
            else MAX_DISCARDED * BIG.get(table, float("inf"))
        )
        if discarded > limit:
            found.append(f"{node['Node Type']} on {table or 'a join'} discards {discarded} rows")
    return found


def explain(
    conn: psycopg.Connection[dict[str, Any]],
    sql: str,
    params: dict[str, Any],
    after: str | None = None,
) -> dict[str, Any]:
    """The executed plan of `sql`, run after the named query `after` (if any) in one
    transaction that is rolled back."""
    inner = re.fullmatch(r"(?s)COPY \((.*)\) TO STDOUT(?:\s*\([^()]*\))?;?", sql.strip())
    body = (inner.group(1) if inner else sql).strip().rstrip(";")
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL statement_timeout = '20s'")
        conn.execute("SET LOCAL jit = off")  # as m10jobs.edges.db connects
        if after:
            conn.execute(query(after))
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + body, params).fetchone()
    plan = row["QUERY PLAN"]
    return (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]


def test_recurring_queries_touch_no_big_table_wholesale(big_db: str) -> None:
    bad = {}
    with psycopg.connect(big_db, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SELECT m10_recovery.acquire_lock('m10:outbox_processor', 'h:1:r', 300)")
        for name, params in sorted(PARAMS.items()):
            found = problems(explain(conn, query(name), params, RUN_AFTER.get(name)))
            if found:
                bad[name] = found
        # the steady state every 5 minutes: nothing past any retention cutoff yet
        for name in [n for n in PARAMS if n.startswith("retention_upto_")]:
            idle = {**PARAMS[name], "cutoff": datetime.now(UTC) - timedelta(days=3650), "after": 0}
            found = problems(explain(conn, query(name), idle))
            if found:
                bad[f"{name} (nothing to do)"] = found
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
        assert problems(
            explain(conn, "SELECT * FROM m10_recovery.outbox WHERE last_error = 'x'", {})
        )


# -- the claim on statistics that do not know the backlog (issue 23) -------------------------

BURST = 50_000  # events enqueued at once, after the last ANALYZE or with none ever
HELD = 500  # aggregates whose first event waits for a retry, holding back their others
ENQUEUE_BURST = """
INSERT INTO m10_recovery.outbox (event_type, aggregate_type, aggregate_id, payload,
                                 idempotency_key, attempts, next_attempt_at)
SELECT 'order.created', 'order', (g %% 1000)::text, jsonb_build_object('n', g), 'b:' || g,
       CASE WHEN g <= %(held)s THEN 3 ELSE 0 END,
       now() + CASE WHEN g <= %(held)s THEN interval '1 hour' ELSE interval '0' END
  FROM generate_series(1, %(n)s) g
"""


def claim_shape(plan: dict[str, Any]) -> list[str]:
    """What the claim must be on any statistics: a Limit (under the outer query that
    measures payloads) over an ordered walk of
    outbox_pending_idx whose hold-back probe is outbox_held_idx; no Sort, no bitmap scan,
    no sequential scan, and it reads about what it returns."""
    found = []
    walk = plan  # through the outer query that measures payloads and the Limit
    while walk["Node Type"] in ("Subquery Scan", "Limit"):
        walk = walk["Plans"][0]
    if (walk["Node Type"], walk.get("Index Name")) != ("Index Scan", "outbox_pending_idx"):
        found.append(f"claim walks {walk['Node Type']} {walk.get('Index Name', '')}")
    read = walk.get("Actual Rows", 0) + walk.get("Rows Removed by Filter", 0)
    if read > 2 * PARAMS["outbox_claim"]["limit"] + HELD:
        found.append(f"claim reads {read} candidates")
    for node in _nodes(plan):
        kind = node["Node Type"]
        if kind == "Sort" or kind.startswith("Bitmap") or kind == "Seq Scan":
            found.append(f"{kind} on {node.get('Relation Name', 'rows')}")
    probes = [
        n
        for sub in _nodes(plan)
        if sub.get("Parent Relationship") == "SubPlan"
        for n in _nodes(sub)
        if n.get("Relation Name")
    ]
    for n in probes:
        if n.get("Index Name") != "outbox_held_idx":
            found.append(f"hold-back probe by {n['Node Type']} {n.get('Index Name', '')}")
    return found


def _claim(conn: psycopg.Connection[dict[str, Any]], sql: str | None = None) -> dict[str, Any]:
    """The claim's plan as the processor runs it (after outbox_claim_plan), or `sql`'s plan
    on its own."""
    if sql is None:
        return explain(conn, query("outbox_claim"), PARAMS["outbox_claim"], "outbox_claim_plan")
    return explain(conn, sql, PARAMS["outbox_claim"])


@pytest.fixture
def burst_db(pg: Postgres, pg_template: NoopExecutor) -> Iterator[str]:
    """A migrated database whose outbox autovacuum may not analyze behind the test's back."""
    name = f"burst{os.getpid()}"
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name}")
        c.execute(f"CREATE DATABASE {name} TEMPLATE {pg_template.template_dbname}")
    dsn = pg.dsn_for(name)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("ALTER TABLE m10_recovery.outbox SET (autovacuum_enabled = false)")
    yield dsn
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _analyzed(conn: psycopg.Connection[dict[str, Any]]) -> bool:
    row = conn.execute(
        "SELECT coalesce(last_analyze, last_autoanalyze) IS NOT NULL AS done"
        "  FROM pg_stat_user_tables WHERE relid = 'm10_recovery.outbox'::regclass"
    ).fetchone()
    return bool(row and row["done"])


def test_the_claim_walks_the_pending_index_on_fresh_statistics(big_db: str) -> None:
    with psycopg.connect(big_db, autocommit=True, row_factory=dict_row) as conn:
        assert claim_shape(_claim(conn)) == []


def test_the_claim_walks_the_pending_index_on_a_table_never_analyzed(burst_db: str) -> None:
    with psycopg.connect(burst_db, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(ENQUEUE_BURST, {"n": BURST, "held": HELD})
        assert not _analyzed(conn)
        assert claim_shape(_claim(conn)) == []
        # what the issue measured: without the claim's settings, a bitmap scan of the whole
        # burst, every row probed, then a sort
        old = claim_shape(_claim(conn, query("outbox_claim")))
        assert any(p.startswith("Sort") for p in old), old


def test_the_claim_walks_the_pending_index_on_stats_from_before_a_burst(burst_db: str) -> None:
    with psycopg.connect(burst_db, autocommit=True, row_factory=dict_row) as conn:
        # analyzed while the outbox held only published history, then a burst
        conn.execute(ENQUEUE_BURST, {"n": 20_000, "held": 0})
        conn.execute(
            "UPDATE m10_recovery.outbox SET status = 'published', published_at = now(),"
            " idempotency_key = 'old:' || id"
        )
        conn.execute("VACUUM ANALYZE m10_recovery.outbox")
        conn.execute(ENQUEUE_BURST, {"n": BURST, "held": HELD})
        # statistics that know no pending event make every partial index look free
        assert claim_shape(_claim(conn)) != []
        # the processor's first full batch sees it and analyzes (once)
        assert analyze_if_stale(conn, PARAMS["outbox_claim"]["limit"])
        assert not analyze_if_stale(conn, PARAMS["outbox_claim"]["limit"])
        assert claim_shape(_claim(conn)) == []
