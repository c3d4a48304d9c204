-- Outbox processor (issue 3): what the drain, retries and dead letters need
-- beyond 001_schema.sql.

-- How many times the event was dead-lettered.  Part of the dead-letter
-- stream's idempotency key, so a hand-retried event that fails again gets a
-- new dead-letter entry while a crash-repeated dead-lettering does not.
ALTER TABLE m10_recovery.outbox ADD COLUMN dead_letters integer NOT NULL DEFAULT 0;

-- Events that failed at least once and still wait: few rows, read by every
-- claim to hold back later events of their aggregate.
CREATE INDEX outbox_retrying_idx ON m10_recovery.outbox (next_attempt_at)
    WHERE status = 'pending' AND attempts > 0;

-- `m10 outbox status` and retries by hand look dead letters up by id.
CREATE INDEX outbox_dead_lettered_idx ON m10_recovery.outbox (id)
    WHERE status = 'dead_lettered';

-- m10-synthetic-traffic checks its own recent events.
CREATE INDEX outbox_synthetic_idx ON m10_recovery.outbox (created_at)
    WHERE event_type = 'm10.synthetic';

ALTER TABLE m10_recovery.outbox OWNER TO m10_ops;
