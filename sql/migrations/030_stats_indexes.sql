-- Indexes for m10-daily-stats: every figure is a range scan over one day, so
-- the export stays fast however much history the tables keep.
CREATE INDEX IF NOT EXISTS outbox_created_at_idx ON m10_recovery.outbox (created_at);
CREATE INDEX IF NOT EXISTS dead_letter_archive_dead_lettered_at_idx
    ON m10_recovery.dead_letter_archive (dead_lettered_at);
CREATE INDEX IF NOT EXISTS dead_letter_archive_reconciled_at_idx
    ON m10_recovery.dead_letter_archive (reconciled_at) WHERE reconciled_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS retention_jobs_finished_at_idx
    ON m10_recovery.retention_jobs (finished_at) WHERE finished_at IS NOT NULL;
