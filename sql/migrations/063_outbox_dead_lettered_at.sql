-- When an outbox event was (last) dead-lettered, so retention can purge
-- dead-lettered rows once archived and old (they were never purged).  NULL on
-- rows dead-lettered before this migration: retention then goes by created_at
-- (dead-lettering happens within hours of enqueueing, after max_attempts).
-- A nullable column without default: a catalog change only, no table rewrite;
-- the migrator's lock_timeout keeps producers from queueing behind it.
ALTER TABLE m10_recovery.outbox ADD COLUMN dead_lettered_at timestamptz;
