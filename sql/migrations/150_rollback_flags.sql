-- m10: expand
-- Feature flags as a rollback action (rollback.set_flags, docs/flags.md).
--
-- The flags the claimer is to set are recorded in its claim (the same fenced
-- insert), and flags_applied_at when its write of the host's flags file is done.
-- The write itself is idempotent (the file records the action id
-- `rollback:<report_run_id>` with the values), so a claimer killed between its
-- claim and that write -- or between the write and this stamp -- finishes the job
-- on its next pass: the flags are applied exactly once per acted report.
ALTER TABLE m10_recovery.rollback_actions
    ADD COLUMN set_flags        jsonb,
    ADD COLUMN flags_applied_at timestamptz;
