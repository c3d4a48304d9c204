-- m10: no-transaction
-- replay_log.event_id carried two identical indexes: the UNIQUE constraint of
-- 001_schema.sql (replay_log_event_id_key, which the publish's
-- ON CONFLICT (event_id) needs) and 020_maintenance.sql's replay_log_event_id_idx
-- on the same column.  Every publish maintained both.  Keep the constraint.
-- CONCURRENTLY: replay_log is written by every publish and may be large.
DROP INDEX CONCURRENTLY IF EXISTS m10_recovery.replay_log_event_id_idx;
