-- Dead letters an operator can settle, and refusals that are never replayed (issue 23).
--
-- refusal: why a dead letter would fail again the same way, so reconcile never replays it
-- automatically: 'size' (the outbox processor refused its payload for outbox.max_payload_bytes;
-- the archive and the dead-letter stream hold only its size, sha256 and a preview, the payload
-- stays in m10_recovery.outbox under event_id) or 'shape' (no event_type, no payload, or a
-- payload that is not JSON).  NULL: a failure that a replay may cure.
--
-- 'discarded': an operator settled the dead letter (`m10 dl discard ID --reason TEXT`); who
-- (the OS user, SUDO_USER first), why, and when (reconciled_at, the database clock).  It no
-- longer counts as abandoned (dead_letter_archive_abandoned_idx is for outcome 'abandoned').
ALTER TABLE m10_recovery.dead_letter_archive
    ADD COLUMN refusal text CHECK (refusal IN ('size', 'shape')),
    ADD COLUMN discarded_by text,
    ADD COLUMN discard_reason text;

ALTER TABLE m10_recovery.dead_letter_archive
    DROP CONSTRAINT dead_letter_archive_reconcile_outcome_check;
ALTER TABLE m10_recovery.dead_letter_archive
    ADD CONSTRAINT dead_letter_archive_reconcile_outcome_check CHECK (reconcile_outcome IN
        ('already_processed', 'replayed', 'abandoned', 'discarded'));
ALTER TABLE m10_recovery.dead_letter_archive
    ADD CONSTRAINT dead_letter_archive_discard_check CHECK (
        reconcile_outcome IS DISTINCT FROM 'discarded'
        OR (discarded_by IS NOT NULL AND discard_reason IS NOT NULL));
