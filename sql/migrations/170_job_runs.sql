-- m10: expand
-- Run history, cluster-wide (`m10 history`; `m10 status` shows each failed job's own last
-- error from it).  The runner inserts one row per task of every run that reached the
-- database, in one statement at the end of the run, on the run's own connection (a fresh
-- short one if that died); a failed insert is a warning, never the run's outcome.  Not
-- recorded: dry runs, and starts skipped (75) by the lease probe before connecting.
-- Times are the database clock's: ended_at is the insert's, started_at that minus the
-- task's measured duration.  Kept for [retention.job_runs] max_age_days (maintenance's
-- retention_cleanup, archived like the other tables).
CREATE TABLE m10_recovery.job_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host        text        NOT NULL,
    job         text        NOT NULL,
    task        text        NOT NULL,
    lock_name   text,
    run_id      text        NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz NOT NULL,
    exit_code   integer     NOT NULL,
    status      text        NOT NULL,
    error       text,
    summary     jsonb       NOT NULL DEFAULT '{}'::jsonb
);
-- `m10 history JOB` and each job's last failure (`m10 status`): newest first per job.
CREATE INDEX job_runs_job_started_idx ON m10_recovery.job_runs (job, started_at DESC);
-- `m10 history` of every job, newest first.
CREATE INDEX job_runs_started_idx ON m10_recovery.job_runs (started_at DESC);
ALTER TABLE m10_recovery.job_runs OWNER TO m10_ops;
