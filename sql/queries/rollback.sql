-- Rollback ledger queries (m10-rollback, m10 canary status).  See migration 070.

-- rollback_lock_ledger --
-- Serialise claimers for the rest of the transaction (readers are not blocked).
LOCK TABLE m10_recovery.rollback_actions IN SHARE ROW EXCLUSIVE MODE;

-- rollback_claim --
-- Claim a report unless it was claimed already or the newest claim is inside the cooldown.
INSERT INTO m10_recovery.rollback_actions
       (report_run_id, host, lock_name, holder_id, fencing_token, rollback_run_id, command,
        verdict, set_flags)
SELECT %(report_run_id)s, %(host)s, %(lock)s, %(holder)s, %(token)s, %(run_id)s,
       %(command)s, %(verdict)s, %(set_flags)s
 WHERE NOT EXISTS (SELECT 1 FROM m10_recovery.rollback_actions
                    WHERE started_at > clock_timestamp()
                                       - make_interval(secs => %(cooldown_s)s))
ON CONFLICT (report_run_id) DO NOTHING
RETURNING started_at;

-- rollback_action --
-- The ledger row of one report (None: never acted on).
SELECT report_run_id, host, holder_id, fencing_token, rollback_run_id, command, verdict,
       started_at, finished_at, outcome, exit_status, duration_s, set_flags, flags_applied_at
  FROM m10_recovery.rollback_actions
 WHERE report_run_id = %(report_run_id)s;

-- rollback_latest --
-- The newest claim and how long ago it was (database clock), for the cooldown.
SELECT report_run_id, host, started_at, outcome,
       extract(epoch FROM clock_timestamp() - started_at)::float8 AS age_s
  FROM m10_recovery.rollback_actions
 ORDER BY started_at DESC
 LIMIT 1;

-- rollback_finish --
-- Record the outcome of the claimer's command (unfenced: a lost lease must not lose it).
UPDATE m10_recovery.rollback_actions
   SET finished_at = clock_timestamp(), outcome = %(outcome)s, exit_status = %(exit_status)s,
       duration_s = %(duration_s)s
 WHERE report_run_id = %(report_run_id)s AND rollback_run_id = %(run_id)s;

-- rollback_flags_pending --
-- This host's claims whose flags were never written (the claimer was killed), young
-- enough to finish (a claim older than max_report_age_s is left to the operator).
SELECT report_run_id, set_flags, started_at,
       extract(epoch FROM clock_timestamp() - started_at)::float8 AS age_s
  FROM m10_recovery.rollback_actions
 WHERE host = %(host)s AND set_flags IS NOT NULL AND flags_applied_at IS NULL
 ORDER BY started_at;

-- rollback_flags_applied --
-- The claim's flags are in this host's flags file.
UPDATE m10_recovery.rollback_actions
   SET flags_applied_at = clock_timestamp()
 WHERE report_run_id = %(report_run_id)s AND flags_applied_at IS NULL;
