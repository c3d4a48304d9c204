-- Corrections to what earlier (checksummed, so unedited) migrations say.
-- The catalog carries them as comments, so sql/schema.sql shows them too.
--
-- 030_stats_indexes.sql's dead_letter_archive_reconciled_at_idx (predicate
-- reconciled_at IS NOT NULL) never existed: 020_maintenance.sql had already
-- created an index of that name with predicate reconcile_outcome IS NOT NULL,
-- so 030's CREATE INDEX IF NOT EXISTS did nothing.  020's index serves every
-- query (reconciled_at is set exactly when reconcile_outcome is, and each query
-- names reconcile_outcome IS NOT NULL), so it stays.
--
-- 002_lease_functions.sql's header describes acquire_lock, assert_lease,
-- reclaim_expired_locks and force_release_lock as created there; 050_bounded_fence.sql
-- replaced all four (lock_timeout, SKIP LOCKED, an idle-transaction bound).
-- 061's outbox_held_idx replaced the claim's use of outbox_retrying_idx.
COMMENT ON INDEX m10_recovery.dead_letter_archive_reconciled_at_idx IS
    'Reconciled dead letters by reconcile time (retention, daily stats). Created by 020 with '
    'predicate reconcile_outcome IS NOT NULL; 030''s same-named index was a no-op.';
COMMENT ON INDEX m10_recovery.outbox_held_idx IS
    'Events that failed and wait for a retry, by aggregate: the claim''s hold-back probe.';
COMMENT ON FUNCTION m10_recovery.acquire_lock(text, text, integer) IS
    'Lease: fencing token or NULL while held (050: gives up after 2 s on a fenced row).';
COMMENT ON FUNCTION m10_recovery.assert_lease(text, text, bigint) IS
    'Fence: raises M10LL unless the lease is live (050: bounds the caller''s idle transaction).';
COMMENT ON FUNCTION m10_recovery.reclaim_expired_locks() IS
    'GC of lapsed leases (050: skips rows a fenced transaction holds).';
COMMENT ON FUNCTION m10_recovery.force_release_lock(text) IS
    'Operator release (050: raises 55P03 after 2 s on a fenced row).';
