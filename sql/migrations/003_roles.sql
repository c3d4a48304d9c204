-- Schema isolation (seed: "L6 never reads L7 state", "function-based access
-- only").  m10_ops owns everything; m10_app (what L5/L6 connect as) may only
-- EXECUTE enqueue_outbox; PUBLIC gets nothing.  Roles are cluster-wide, so
-- they are created only when missing.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'm10_ops') THEN
        CREATE ROLE m10_ops NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'm10_app') THEN
        CREATE ROLE m10_app NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- another database of this cluster migrated at the same moment
END
$$;

ALTER SCHEMA m10_recovery OWNER TO m10_ops;
ALTER TABLE m10_recovery.distributed_locks OWNER TO m10_ops;
ALTER TABLE m10_recovery.outbox OWNER TO m10_ops;
ALTER TABLE m10_recovery.replay_log OWNER TO m10_ops;
ALTER TABLE m10_recovery.dead_letter_archive OWNER TO m10_ops;
ALTER TABLE m10_recovery.retention_jobs OWNER TO m10_ops;
ALTER SEQUENCE m10_recovery.fencing_token_seq OWNER TO m10_ops;
ALTER FUNCTION m10_recovery.check_lease_args(text, text, integer) OWNER TO m10_ops;
ALTER FUNCTION m10_recovery.acquire_lock(text, text, integer) OWNER TO m10_ops;
ALTER FUNCTION m10_recovery.extend_lock(text, text, bigint, integer) OWNER TO m10_ops;
ALTER FUNCTION m10_recovery.release_lock(text, text, bigint) OWNER TO m10_ops;
ALTER FUNCTION m10_recovery.reclaim_expired_locks() OWNER TO m10_ops;
ALTER FUNCTION m10_recovery.assert_lease(text, text, bigint) OWNER TO m10_ops;
ALTER FUNCTION m10_recovery.enqueue_outbox(text, jsonb, text, text, text) OWNER TO m10_ops;
ALTER FUNCTION m10_recovery.force_release_lock(text) OWNER TO m10_ops;

-- Functions m10_ops creates later start with no PUBLIC EXECUTE.  (A
-- per-schema default cannot revoke the global PUBLIC grant, hence FOR ROLE;
-- sql/grants.sql re-applies the whole policy after every migrate, whoever ran it.)
ALTER DEFAULT PRIVILEGES FOR ROLE m10_ops REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
-- Grants themselves live in sql/grants.sql, applied after every migrate.
