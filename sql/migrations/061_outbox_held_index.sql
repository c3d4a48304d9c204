-- m10: no-transaction
-- The outbox claim holds back every later event of an aggregate whose earlier
-- event waits for a retry.  It used to collect those aggregates into a
-- materialised CTE that the planner guessed tiny (~100 rows), picking a nested
-- loop that compared every candidate with every held aggregate: 0.8-0.9 s per
-- batch with 5,000 held.  The claim now probes this index once per candidate
-- (few rows: only events that failed and still wait), so it stays flat however
-- many retries pile up and however big the outbox grows.
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_held_idx
    ON m10_recovery.outbox (coalesce(aggregate_type, ''), aggregate_id, id)
    WHERE status = 'pending' AND attempts > 0 AND aggregate_id IS NOT NULL;
