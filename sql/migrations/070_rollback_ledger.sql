-- The rollback ledger: which canary reports a rollback acted on, cluster-wide.
--
-- Several hosts run m10-rollback, each on its own host-local report under its
-- own lease (m10:rollback@<host>), so leases alone cannot make "one failing
-- verdict -> one rollback".  The claim is a row here: inserted, fenced by the
-- claimer's lease, with ON CONFLICT (report_run_id) DO NOTHING deciding who
-- acts, under a table lock so the cluster-wide cooldown (no claim while the
-- newest one is younger than rollback.cooldown_seconds, database clock) is
-- checked and taken atomically.  The outcome is written to the same row when
-- the command ends; a row with no outcome is a rollback that was killed.

CREATE TABLE m10_recovery.rollback_actions (
    report_run_id    text        PRIMARY KEY CHECK (report_run_id <> ''),
    host             text        NOT NULL,
    lock_name        text        NOT NULL,
    holder_id        text        NOT NULL,
    fencing_token    bigint      NOT NULL,
    rollback_run_id  text        NOT NULL,
    command          jsonb       NOT NULL,
    verdict          text        NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at      timestamptz,
    outcome          text        CHECK (outcome IN ('succeeded', 'failed', 'timeout', 'error')),
    exit_status      integer,
    duration_s       numeric,
    CHECK ((finished_at IS NULL) = (outcome IS NULL))
);
-- The cooldown asks for the newest claim.
CREATE INDEX rollback_actions_started_at_idx ON m10_recovery.rollback_actions (started_at);
ALTER TABLE m10_recovery.rollback_actions OWNER TO m10_ops;
