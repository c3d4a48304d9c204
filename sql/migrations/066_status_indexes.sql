-- `m10 status` (issue 14): abandoned dead letters are the ones an operator must act on
-- (`m10 dl replay` turns them into `replayed`), so counting them must not scan the archive.
CREATE INDEX IF NOT EXISTS dead_letter_archive_abandoned_idx
    ON m10_recovery.dead_letter_archive (id) WHERE reconcile_outcome = 'abandoned';
