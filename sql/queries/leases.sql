-- Lease queries.  Every query the Python runs is named (procrastinate's convention):
--   -- name --
--   -- one line saying what it is for
--   SQL
-- Loaded once by m10jobs.edges.queries from sql/queries/*.sql; psycopg placeholders.

-- acquire_lock --
-- Take a lease; a fencing token, or NULL while someone else holds it.  session 'bound': the
-- lease is free as soon as this session and the heartbeat's have ended (migration 100); set
-- for this transaction only (the CTE runs first), so nothing leaks into a pooled session.
WITH s AS MATERIALIZED (SELECT set_config('m10.lease_session', %(session)s, true))
SELECT m10_recovery.acquire_lock(%(name)s, %(holder)s, %(ttl)s) AS token FROM s;

-- extend_lock --
-- Push out the expiry of a lease this holder still has (re-stamping server and session).
WITH s AS MATERIALIZED (SELECT set_config('m10.lease_session', %(session)s, true))
SELECT m10_recovery.extend_lock(%(name)s, %(holder)s, %(token)s, %(ttl)s) AS extended FROM s;

-- release_lock --
-- Give a lease back; false when it was no longer ours.
SELECT m10_recovery.release_lock(%(name)s, %(holder)s, %(token)s) AS released;

-- assert_lease --
-- Fence: raise (SQLSTATE M10LL) unless this lease is live, inside the caller's transaction.
SELECT m10_recovery.assert_lease(%(name)s, %(holder)s, %(token)s);

-- bound_idle_transactions --
-- A lease holder may leave a transaction idle this long; then the server ends it.
SELECT set_config('idle_in_transaction_session_timeout', %(ms)s::text, false);

-- lease_held --
-- Whether this holder's lease is still live (asked after a pass failed, to name the cause).
SELECT EXISTS (SELECT 1 FROM m10_recovery.distributed_locks
                WHERE lock_name = %(name)s AND holder_id = %(holder)s
                  AND fencing_token = %(token)s AND expires_at > clock_timestamp()) AS held;

-- lock_holder --
-- Who holds a lock, for the "busy, skipped" log line (an orphaned lease -- its holder's
-- server restarted or sessions ended, migration 100 -- is held by nobody).
SELECT holder_id, fencing_token,
       extract(epoch FROM clock_timestamp() - acquired_at)::float8 AS age_s,
       extract(epoch FROM expires_at - clock_timestamp())::float8 AS expires_in_s
  FROM m10_recovery.distributed_locks l
 WHERE lock_name = %(name)s AND NOT m10_recovery.lease_orphaned(l);

-- lease_holders --
-- Who holds any of a pass's leases (one round trip): a pass finding every one live elsewhere skips.
SELECT lock_name, holder_id, fencing_token,
       extract(epoch FROM clock_timestamp() - acquired_at)::float8 AS age_s,
       extract(epoch FROM expires_at - clock_timestamp())::float8 AS expires_in_s
  FROM m10_recovery.distributed_locks l
 WHERE lock_name = ANY (%(names)s::text[]) AND NOT m10_recovery.lease_orphaned(l);

-- list_locks --
-- Every lease row with ages computed by the database clock; orphaned: free at once although
-- unexpired (its holder's server restarted or was promoted, or its sessions ended).
SELECT lock_name, holder_id, fencing_token, acquired_at, expires_at, extended_at,
       extract(epoch FROM clock_timestamp() - acquired_at)::float8 AS age_s,
       extract(epoch FROM expires_at - clock_timestamp())::float8 AS expires_in_s,
       m10_recovery.lease_orphaned(l) AS orphaned
  FROM m10_recovery.distributed_locks l
 ORDER BY lock_name;

-- force_release_lock --
-- Remove a lease whoever holds it (operator recovery only).
SELECT holder_id, fencing_token, expires_at FROM m10_recovery.force_release_lock(%(name)s);

-- reclaim_expired_locks --
-- Delete lapsed leases; how many.
SELECT m10_recovery.reclaim_expired_locks() AS reclaimed;

-- count_expired_locks --
-- What reclaim_gc would delete (for --dry-run).
SELECT count(*) AS expired FROM m10_recovery.distributed_locks l
 WHERE NOT m10_recovery.lease_live(l);
