-- Maintenance orchestrator state (issue 4).
--
-- dead_letter_archive.lineage_key: the idempotency key an event was first
-- enqueued with (or event:<id> / dl:<stream>:<entry> without one).  Every
-- replay of a dead letter is enqueued as <lineage>#replay<n>, so the replay
-- cap counts replays across the whole chain, and a retried replay reuses its
-- key (enqueue_outbox returns the first id: no duplicate events).
ALTER TABLE m10_recovery.dead_letter_archive ADD COLUMN lineage_key text;
CREATE INDEX dead_letter_archive_lineage_idx
    ON m10_recovery.dead_letter_archive (lineage_key);
CREATE INDEX dead_letter_archive_reconciled_at_idx
    ON m10_recovery.dead_letter_archive (reconciled_at) WHERE reconcile_outcome IS NOT NULL;
CREATE INDEX replay_log_event_id_idx ON m10_recovery.replay_log (event_id);

-- Last refresh of each materialized view (min interval, duration).
CREATE TABLE m10_recovery.matview_refreshes (
    view_name      text        PRIMARY KEY,
    refreshed_at   timestamptz NOT NULL,
    duration_ms    bigint      NOT NULL,
    was_concurrent boolean     NOT NULL,
    run_id         text        NOT NULL
);
ALTER TABLE m10_recovery.matview_refreshes OWNER TO m10_ops;
REVOKE ALL ON m10_recovery.matview_refreshes FROM PUBLIC;
