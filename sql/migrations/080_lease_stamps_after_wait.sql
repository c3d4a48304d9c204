-- Lease times are read from the database clock *after* any row-lock wait.
--
-- acquire_lock (050) read clock_timestamp() once, on entry, then its upsert
-- could wait up to lock_timeout (2 s) for a holder's fenced transaction to
-- end.  A takeover after that wait was stamped with the entry time: the new
-- lease was recorded as starting before the old holder let go of the row, and
-- its TTL was shortened by the wait; its token, too, was drawn before the
-- wait.  extend_lock judged expiry and stamped the new expiry with its entry
-- time, so a lease that lapsed while extend_lock waited could be extended,
-- and assert_lease judged expiry before its FOR SHARE wait.
--
-- Each function now locks the row first (the only wait), then reads
-- clock_timestamp() once, and judges and stamps with that one value:
-- acquired_at >= the moment the previous holder's transaction ended, and
-- expires_at - acquired_at (or - extended_at) is exactly the TTL.  acquire_lock
-- also answers NULL at once for a lease that is live when it looks, instead of
-- queueing behind the holder's fenced transaction only to find it live.

CREATE OR REPLACE FUNCTION m10_recovery.acquire_lock(p_lock_name text, p_holder_id text,
                                                     p_ttl_seconds integer DEFAULT 300)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
    v_expires timestamptz;
    v_found   boolean;
    v_now     timestamptz;
    v_token   bigint;
BEGIN
    PERFORM m10_recovery.check_lease_args(p_lock_name, p_holder_id, p_ttl_seconds);
    -- A live lease stays live until it expires: say so without queueing for its row.
    PERFORM 1 FROM m10_recovery.distributed_locks
     WHERE lock_name = p_lock_name AND expires_at > clock_timestamp();
    IF FOUND THEN
        RETURN NULL;
    END IF;
    LOOP
        BEGIN
            -- The wait, if any: a holder's fenced transaction has the row (FOR SHARE).
            SELECT l.expires_at INTO v_expires
              FROM m10_recovery.distributed_locks l
             WHERE l.lock_name = p_lock_name
               FOR UPDATE;
            v_found := FOUND;
            v_now := clock_timestamp();
            IF v_found THEN
                IF v_expires > v_now THEN
                    RETURN NULL;  -- live: held (not reentrant)
                END IF;
                UPDATE m10_recovery.distributed_locks
                   SET holder_id     = p_holder_id,
                       fencing_token = nextval('m10_recovery.fencing_token_seq'),
                       acquired_at   = v_now,
                       expires_at    = v_now + make_interval(secs => p_ttl_seconds),
                       extended_at   = NULL
                 WHERE lock_name = p_lock_name
                RETURNING fencing_token INTO v_token;
                RETURN v_token;
            END IF;
            -- No row: insert one.  A concurrent acquirer's insert makes this wait
            -- for it and then do nothing; the loop then judges that row.
            INSERT INTO m10_recovery.distributed_locks
                   (lock_name, holder_id, fencing_token, acquired_at, expires_at)
            VALUES (p_lock_name, p_holder_id, nextval('m10_recovery.fencing_token_seq'),
                    v_now, v_now + make_interval(secs => p_ttl_seconds))
            ON CONFLICT (lock_name) DO NOTHING
            RETURNING fencing_token INTO v_token;
            IF v_token IS NOT NULL THEN
                RETURN v_token;
            END IF;
        EXCEPTION WHEN lock_not_available THEN
            RETURN NULL;  -- the holder's fenced transaction is still open: held
        END;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION m10_recovery.extend_lock(p_lock_name text, p_holder_id text,
                                                    p_fencing_token bigint,
                                                    p_ttl_seconds integer DEFAULT 300)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz;
BEGIN
    PERFORM m10_recovery.check_lease_args(p_lock_name, p_holder_id, p_ttl_seconds);
    -- The wait, if any, happens here, before the clock is read.
    PERFORM 1 FROM m10_recovery.distributed_locks
     WHERE lock_name = p_lock_name
       AND holder_id = p_holder_id
       AND (p_fencing_token IS NULL OR fencing_token = p_fencing_token)
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    v_now := clock_timestamp();
    UPDATE m10_recovery.distributed_locks
       SET expires_at = v_now + make_interval(secs => p_ttl_seconds),
           extended_at = v_now
     WHERE lock_name = p_lock_name
       AND holder_id = p_holder_id
       AND (p_fencing_token IS NULL OR fencing_token = p_fencing_token)
       AND expires_at > v_now;
    RETURN FOUND;
END
$$;

CREATE OR REPLACE FUNCTION m10_recovery.assert_lease(p_lock_name text, p_holder_id text,
                                                     p_fencing_token bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_expires timestamptz;
    v_now     timestamptz;
BEGIN
    SELECT expires_at INTO v_expires
      FROM m10_recovery.distributed_locks
     WHERE lock_name = p_lock_name
       AND holder_id = p_holder_id
       AND fencing_token = p_fencing_token
       AND expires_at > clock_timestamp()
       FOR SHARE;
    v_now := clock_timestamp();  -- after the FOR SHARE wait, if there was one
    IF v_expires IS NULL OR v_expires <= v_now THEN
        RAISE EXCEPTION 'lease % with fencing token % is no longer held by %',
              p_lock_name, p_fencing_token, p_holder_id
              USING ERRCODE = 'M10LL';
    END IF;
    -- Local to the caller's transaction, like release_lock's synchronous_commit.
    PERFORM set_config('idle_in_transaction_session_timeout',
                       greatest((extract(epoch FROM v_expires - v_now) * 1000)::bigint,
                                1000)::text, true);
END
$$;
