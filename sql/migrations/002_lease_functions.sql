-- Leases (docs/contract.md, "Leases and fencing").  Four tiny statements in the manner of River's
-- leader election: the database clock is the only clock, so host clock skew
-- cannot hand one lease to two holders.  clock_timestamp() rather than now():
-- a caller inside a long transaction must not judge expiry by a stale time.

CREATE FUNCTION m10_recovery.check_lease_args(p_lock_name text, p_holder_id text,
                                              p_ttl_seconds integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_lock_name IS NULL OR p_lock_name = '' THEN
        RAISE EXCEPTION 'lock name must be a non-empty string' USING ERRCODE = '22023';
    END IF;
    IF p_holder_id IS NULL OR p_holder_id = '' THEN
        RAISE EXCEPTION 'holder id must be a non-empty string' USING ERRCODE = '22023';
    END IF;
    IF p_ttl_seconds IS NULL OR p_ttl_seconds < 1 OR p_ttl_seconds > 86400 THEN
        RAISE EXCEPTION 'ttl must be between 1 and 86400 seconds, got %', p_ttl_seconds
            USING ERRCODE = '22023';
    END IF;
END
$$;

-- A fencing token when the lock was free or its lease expired; NULL while
-- another (or the same) holder's lease is live.  Not reentrant.
CREATE FUNCTION m10_recovery.acquire_lock(p_lock_name text, p_holder_id text,
                                          p_ttl_seconds integer DEFAULT 300)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now   timestamptz := clock_timestamp();
    v_token bigint;
BEGIN
    PERFORM m10_recovery.check_lease_args(p_lock_name, p_holder_id, p_ttl_seconds);
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
    RETURN v_token;
END
$$;

-- Push the expiry out; only the live holder (and token, when given) may.
CREATE FUNCTION m10_recovery.extend_lock(p_lock_name text, p_holder_id text,
                                         p_fencing_token bigint,
                                         p_ttl_seconds integer DEFAULT 300)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    PERFORM m10_recovery.check_lease_args(p_lock_name, p_holder_id, p_ttl_seconds);
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

-- True only when the caller was the live holder.  A holder whose own lease
-- already lapsed (and nobody took it) gets its row removed but hears false,
-- so it learns that its pass ran unprotected.
--
-- The release commits asynchronously (synchronous_commit=off for its own
-- transaction): a release lost in a database crash only keeps the lease until
-- its TTL, which delays the next holder but never lets two hold it.  That
-- saves one WAL flush per pass.  Call it in its own transaction, as the client
-- does; acquire and extend stay synchronous.
CREATE FUNCTION m10_recovery.release_lock(p_lock_name text, p_holder_id text,
                                          p_fencing_token bigint DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_live boolean;
BEGIN
    PERFORM m10_recovery.check_lease_args(p_lock_name, p_holder_id, 1);
    PERFORM set_config('synchronous_commit', 'off', true);
    DELETE FROM m10_recovery.distributed_locks
     WHERE lock_name = p_lock_name
       AND holder_id = p_holder_id
       AND (p_fencing_token IS NULL OR fencing_token = p_fencing_token)
    RETURNING expires_at > clock_timestamp() INTO v_live;
    RETURN coalesce(v_live, false);
END
$$;

-- Garbage-collect lapsed leases (the reclaim_gc task).  Tokens stay monotonic
-- because they come from fencing_token_seq, not from the row.
CREATE FUNCTION m10_recovery.reclaim_expired_locks()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    DELETE FROM m10_recovery.distributed_locks WHERE expires_at <= clock_timestamp();
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Raises unless (name, holder, token) is the live lease.  Jobs call it inside
-- the transaction that commits work made under the lease, so a holder whose
-- lease lapsed (paused, partitioned) cannot commit.  FOR SHARE holds the row
-- against a takeover until that transaction ends.
CREATE FUNCTION m10_recovery.assert_lease(p_lock_name text, p_holder_id text,
                                          p_fencing_token bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM 1 FROM m10_recovery.distributed_locks
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
END
$$;

-- How other layers write side effects.  A repeated idempotency key returns the
-- first id, also after retention removed the outbox row (replay_log keeps it).
CREATE FUNCTION m10_recovery.enqueue_outbox(p_event_type text, p_payload jsonb,
                                            p_aggregate_type text DEFAULT NULL,
                                            p_aggregate_id text DEFAULT NULL,
                                            p_idempotency_key text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    IF p_event_type IS NULL OR p_event_type = '' THEN
        RAISE EXCEPTION 'event type must be a non-empty string' USING ERRCODE = '22023';
    END IF;
    IF p_payload IS NULL THEN
        RAISE EXCEPTION 'payload must not be NULL' USING ERRCODE = '22023';
    END IF;
    IF p_idempotency_key IS NOT NULL THEN
        SELECT event_id INTO v_id FROM m10_recovery.replay_log
         WHERE idempotency_key = p_idempotency_key ORDER BY id LIMIT 1;
        IF FOUND THEN
            RETURN v_id;
        END IF;
    END IF;
    INSERT INTO m10_recovery.outbox
           (event_type, payload, aggregate_type, aggregate_id, idempotency_key)
    VALUES (p_event_type, p_payload, p_aggregate_type, p_aggregate_id, p_idempotency_key)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        SELECT id INTO v_id FROM m10_recovery.outbox WHERE idempotency_key = p_idempotency_key;
    END IF;
    RETURN v_id;
END
$$;

-- Operator escape hatch (`m10 locks release NAME --force`): removes whatever
-- lease NAME has and returns what it removed, so the caller can log whom it
-- overruled.  The old holder learns of it at its next extend or fenced write.
CREATE FUNCTION m10_recovery.force_release_lock(p_lock_name text)
RETURNS TABLE (holder_id text, fencing_token bigint, expires_at timestamptz)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM m10_recovery.distributed_locks l
     WHERE l.lock_name = p_lock_name
    RETURNING l.holder_id, l.fencing_token, l.expires_at;
$$;
