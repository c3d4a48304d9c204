-- m10: no-transaction
-- Retention's outbox_dead_lettered policy: the oldest dead-lettered rows first,
-- without walking the recent ones (a million after an incident).
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_dead_lettered_at_idx
    ON m10_recovery.outbox (coalesce(dead_lettered_at, created_at), id)
    WHERE status = 'dead_lettered';
