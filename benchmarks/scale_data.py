"""Production-shaped data, generated set-based (one INSERT ... SELECT per table).

Shared by the plan test (tests/integration/test_query_plans.py, ~200k rows) and
`make bench-scale` (100k and 10M rows).  The shape follows a platform that ran
for a while behind a broken consumer: the newest 10 % of the outbox is pending,
10 % of the pending aggregates are held back by an event waiting for a retry,
10 % dead-lettered (each with its dead_letter_archive row, half reconciled), the
rest published; replay_log as long as the outbox; cost records over 60 days.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg


@dataclass(frozen=True)
class Shape:
    outbox: int
    replay_log: int
    dead_letters: int
    cost_records: int

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
               LATERAL (SELECT now() - interval '30 days' * (%(n)s - g) / %(n)s AS t) tt) s
"""

REPLAY_LOG = """
INSERT INTO m10_recovery.replay_log
       (event_id, idempotency_key, event_type, stream, stream_entry_id, fencing_token,
        holder_id, enqueued_at, published_at)
SELECT g, 'k:' || g, 'order.created', 'm10:outbox', g || '-0', 1, 'h', t, t + interval '1 s'
  FROM generate_series(1, %(n)s) g,
       LATERAL (SELECT now() - interval '30 days' * (%(n)s - g) / %(n)s AS t) tt
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
       LATERAL (SELECT now() - interval '30 days' * (%(n)s - g) / %(n)s AS t) tt
"""

COST_RECORDS = """
INSERT INTO aos_cost.cost_records (occurred_at, tenant_id, category, amount_usd)
SELECT now() - interval '60 days' * (%(n)s - g) / %(n)s, 't' || (g %% 50), 'c' || (g %% 5),
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
        conn.execute(q.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(tab,
                                                                       q.Identifier(r["name"])))
    conn.execute(sql, params)
    for r in cons:
        conn.execute(q.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            tab, q.Identifier(r["name"]), q.SQL(r["def"])))
    for r in idxs:
        conn.execute(r["def"])
        if r["comment"]:
            conn.execute(q.SQL("COMMENT ON INDEX {} IS {}").format(q.SQL(r["name"]),
                                                                   q.Literal(r["comment"])))


def fill(conn: psycopg.Connection[Any], shape: Shape) -> None:
    """Fill a freshly migrated database; ANALYZE so plans see the real sizes."""
    conn.autocommit = True
    conn.execute("SET maintenance_work_mem = '256MB'")
    pending = max(shape.outbox // 10, 10)
    aggs = max(pending // 10, 1)
    _bulk(conn, "m10_recovery.outbox", OUTBOX,
          {"n": shape.outbox, "pending": pending, "aggs": aggs})
    conn.execute("SELECT setval(pg_get_serial_sequence('m10_recovery.outbox', 'id'), %s)",
                 (shape.outbox,))
    _bulk(conn, "m10_recovery.replay_log", REPLAY_LOG, {"n": shape.replay_log})
    _bulk(conn, "m10_recovery.dead_letter_archive", DEAD_LETTERS, {"n": shape.dead_letters})
    _bulk(conn, "aos_cost.cost_records", COST_RECORDS, {"n": shape.cost_records})
    conn.execute("VACUUM ANALYZE m10_recovery.outbox, m10_recovery.replay_log, "
                 "m10_recovery.dead_letter_archive, aos_cost.cost_records")
