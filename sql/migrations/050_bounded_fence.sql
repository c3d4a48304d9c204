-- A frozen holder must not wedge its lock forever.
--
-- assert_lease takes FOR SHARE on the lease row so that a takeover waits for
-- the fenced transaction to end.  If the holder then stops (SIGSTOP, a paused
-- VM, a partition that leaves the TCP session open) while that transaction is
-- open, the row stays locked and every later acquire_lock, reclaim and forced
-- release would wait on it indefinitely.  Two bounds:
--
--  * the fenced transaction may sit idle no longer than its lease had left to
--    live (at least 1 s): after that the server ends the session and rolls the
--    transaction back (SQLSTATE 25P03), so nothing is committed and the row is
--    free soon after the lease lapses.  A transaction that is busy (a statement
--    running) is not idle and keeps its protection.
--  * whoever meets a row locked by someone's fenced transaction waits at most
--    2 s: acquire_lock answers NULL (held), reclaim skips the row, and a forced
--    release raises 55P03 for the operator to retry.

CREATE OR REPLACE FUNCTION m10_recovery.assert_lease(p_lock_name text, p_holder_id text,
                                                     p_fencing_token bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_left_ms bigint;
BEGIN
    SELECT (extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint
      INTO v_left_ms
      FROM m10_recovery.distributed_locks
     WHERE lock_name = p_lock_name
       AND holder_id = p_holder_id
       AND fencing_token = p_fencing_token
       AND expires_at > clock_timestamp()
       FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lease % with fencing token % is no longer held by %',
              p_lock_name, p_fencing_token, p_holder_id
              USING ERRCODE = 'M10LL';
    END IF;
    -- Local to the caller's transaction, like release_lock's synchronous_commit.
    PERFORM set_config('idle_in_transaction_session_timeout',
                       greatest(v_left_ms, 1000)::text, true);
END
$$;

CREATE OR REPLACE FUNCTION m10_recovery.acquire_lock(p_lock_name text, p_holder_id text,
                                                     p_ttl_seconds integer DEFAULT 300)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
    v_now   timestamptz := clock_timestamp();
    v_token bigint;
BEGIN
    PERFORM m10_recovery.check_lease_args(p_lock_name, p_holder_id, p_ttl_seconds);
    BEGIN
        INSERT INTO m10_recovery.distributed_locks AS l
               (lock_name, holder_id, fencing_token, acquired_at, expires_at)
        VALUES (p_lock_name, p_holder_id, nextval('m10_recovery.fencing_token_seq'),
                v_now, v_now + make_interval(secs => p_ttl_seconds))
        ON CONFLICT (lock_name) DO UPDATE
           SET holder_id     = excluded.holder_id,
               fencing_token = excluded.fencing_token,
               acquired_at   = excluded.acquired_at,
               expires_at    = excluded.expires_at,
               extended_at   = NULL
         WHERE l.expires_at <= v_now
        RETURNING fencing_token INTO v_token;
    EXCEPTION WHEN lock_not_available THEN
        RETURN NULL;  -- the holder's fenced transaction is still open: held
    END;
    RETURN v_token;
END
$$;

CREATE OR REPLACE FUNCTION m10_recovery.reclaim_expired_locks()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    DELETE FROM m10_recovery.distributed_locks
     WHERE lock_name IN (SELECT lock_name FROM m10_recovery.distributed_locks
                          WHERE expires_at <= clock_timestamp()
                            FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

CREATE OR REPLACE FUNCTION m10_recovery.force_release_lock(p_lock_name text)
RETURNS TABLE (holder_id text, fencing_token bigint, expires_at timestamptz)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'
AS $$
    DELETE FROM m10_recovery.distributed_locks l
     WHERE l.lock_name = p_lock_name
    RETURNING l.holder_id, l.fencing_token, l.expires_at;
$$;
