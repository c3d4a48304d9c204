-- The five L7-private tables of the seed (m10_recovery.*), designed for the
-- flows that use them.  Nothing outside L7 reads this schema: see 003_roles.sql.

CREATE SCHEMA IF NOT EXISTS m10_recovery;

-- Leases.  One row per lock name while held; a free lock has no row.  Fencing
-- tokens come from one sequence, so they rise for every name even after
-- reclaim_expired_locks() deleted a row.
CREATE SEQUENCE m10_recovery.fencing_token_seq AS bigint;

CREATE TABLE m10_recovery.distributed_locks (
    lock_name      text        PRIMARY KEY,
    holder_id      text        NOT NULL,
    fencing_token  bigint      NOT NULL,
    acquired_at    timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    extended_at    timestamptz,
    CHECK (expires_at > acquired_at)
);

-- Transactional outbox: other layers insert through enqueue_outbox() only.
CREATE TABLE m10_recovery.outbox (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_type       text        NOT NULL CHECK (event_type <> ''),
    aggregate_type   text,
    aggregate_id     text,
    payload          jsonb       NOT NULL,
    idempotency_key  text        UNIQUE,
    status           text        NOT NULL DEFAULT 'pending'
                                 CHECK (status IN ('pending', 'published', 'dead_lettered')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    published_at     timestamptz,
    stream           text,
    stream_entry_id  text
);
CREATE INDEX outbox_pending_idx ON m10_recovery.outbox (id) WHERE status = 'pending';
CREATE INDEX outbox_published_at_idx ON m10_recovery.outbox (published_at)
    WHERE status = 'published';
CREATE INDEX outbox_aggregate_idx ON m10_recovery.outbox (aggregate_type, aggregate_id, id)
    WHERE status = 'pending';

-- Idempotency record of every publish: what went where, under which lease.
CREATE TABLE m10_recovery.replay_log (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         bigint      NOT NULL UNIQUE,
    idempotency_key  text,
    event_type       text        NOT NULL,
    stream           text        NOT NULL,
    stream_entry_id  text        NOT NULL,
    fencing_token    bigint      NOT NULL,
    holder_id        text        NOT NULL,
    enqueued_at      timestamptz NOT NULL,
    published_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX replay_log_idempotency_key_idx ON m10_recovery.replay_log (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX replay_log_published_at_idx ON m10_recovery.replay_log (published_at);

-- Dead letters, stored once per dead-letter stream entry, then reconciled.
CREATE TABLE m10_recovery.dead_letter_archive (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dl_stream           text        NOT NULL,
    dl_entry_id         text        NOT NULL,
    source_stream       text,
    source_entry_id     text,
    event_id            bigint,
    idempotency_key     text,
    event_type          text,
    aggregate_type      text,
    aggregate_id        text,
    payload             text,
    fields              jsonb       NOT NULL DEFAULT '{}'::jsonb,
    reason              text        NOT NULL,
    delivery_count      integer,
    dead_lettered_at    timestamptz NOT NULL DEFAULT now(),
    archived_at         timestamptz NOT NULL DEFAULT now(),
    reconcile_outcome   text        CHECK (reconcile_outcome IN
                                    ('already_processed', 'replayed', 'abandoned')),
    reconcile_attempts  integer     NOT NULL DEFAULT 0,
    reconciled_at       timestamptz,
    replay_event_id     bigint,
    UNIQUE (dl_stream, dl_entry_id)
);
CREATE INDEX dead_letter_archive_unreconciled_idx ON m10_recovery.dead_letter_archive (id)
    WHERE reconcile_outcome IS NULL;

-- One row per retention policy per run.
CREATE TABLE m10_recovery.retention_jobs (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id            text        NOT NULL,
    policy            text        NOT NULL,
    target            text        NOT NULL,
    cutoff            timestamptz NOT NULL,
    status            text        NOT NULL DEFAULT 'running'
                                  CHECK (status IN ('running', 'succeeded', 'failed')),
    rows_archived     bigint      NOT NULL DEFAULT 0,
    rows_deleted      bigint      NOT NULL DEFAULT 0,
    archive_location  text,
    error             text,
    started_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    duration_ms       bigint
);
CREATE INDEX retention_jobs_started_at_idx ON m10_recovery.retention_jobs (started_at);
