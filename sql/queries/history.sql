-- Run history (m10_recovery.job_runs, migration 170): the runner's one insert per run,
-- `m10 history` and `m10 status`'s last errors.  Times by the database clock.

-- history_async_commit --
-- In the recording transaction: its commit does not wait for the WAL flush (a history row
-- lost to a server crash in that moment costs nothing; the run's own time does).
SELECT set_config('synchronous_commit', 'off', true);

-- history_record --
-- Every task of one run in one statement, at its end: ended_at is now (the database clock),
-- started_at now minus the time since the task started (ago_s, measured by the runner).
INSERT INTO m10_recovery.job_runs
       (host, job, task, lock_name, run_id, started_at, ended_at, exit_code, status, error,
        summary)
SELECT %(host)s, %(job)s, r.task, r.lock_name, %(run_id)s,
       clock_timestamp() - make_interval(secs => r.started_ago_s),
       clock_timestamp() - make_interval(secs => r.ended_ago_s),
       r.exit_code, r.status, r.error, coalesce(r.summary, '{}'::jsonb)
  FROM jsonb_to_recordset(%(tasks)s::jsonb) AS r(task text, lock_name text, started_ago_s float8,
       ended_ago_s float8, exit_code int, status text, error text, summary jsonb);

-- history_list --
-- Runs newest first, optionally of one job / one host / failed only (exit code neither 0 nor
-- 75) / since a time or for the last %(since_s)s seconds; bounded by %(limit)s, walking job_runs_job_started_idx (one job) or
-- job_runs_started_idx.
SELECT id, host, job, task, lock_name, run_id, started_at, ended_at,
       extract(epoch FROM ended_at - started_at)::float8 AS duration_s,
       exit_code, status, error, summary
  FROM m10_recovery.job_runs
 WHERE (%(job)s::text IS NULL OR job = %(job)s)
   AND (%(host)s::text IS NULL OR host = %(host)s)
   AND (NOT %(failed)s OR exit_code NOT IN (0, 75))
   AND (%(since)s::timestamptz IS NULL OR started_at >= %(since)s)
   AND (%(since_s)s::float8 IS NULL
        OR started_at >= clock_timestamp() - make_interval(secs => %(since_s)s))
 ORDER BY started_at DESC, id DESC
 LIMIT %(limit)s;

-- history_last_runs --
-- For each job given, the newest rows this host recorded (enough for the tasks of its last
-- run: `m10 status` shows the failed tasks' own error lines when that run is the failure
-- this host's metrics/systemd report); one index walk per job.
SELECT j.job, r.run_id, r.task, r.exit_code, r.error,
       extract(epoch FROM clock_timestamp() - r.ended_at)::float8 AS age_s
  FROM unnest(%(jobs)s::text[]) AS j(job)
  CROSS JOIN LATERAL (
        SELECT run_id, task, exit_code, error, ended_at, started_at, id
          FROM m10_recovery.job_runs
         WHERE job = j.job AND host = %(host)s
         ORDER BY started_at DESC
         LIMIT 16) AS r
 ORDER BY j.job, r.started_at DESC, r.id DESC;
