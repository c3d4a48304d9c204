-- m10: expand
-- A lease never outlives an outage, and tokens never go backwards across a promotion.
--
-- Until now a lease row stayed live for its whole TTL whatever happened to its
-- holder: after a `pg_ctl restart` or a promotion (the row replicated to the
-- standby) every run met "held by <a process that no longer exists>" for up to
-- five minutes.  Each lease row now records the server it was taken (or last
-- extended) on -- pg_postmaster_start_time() and the WAL timeline -- and, when
-- the client says its lease is bound to its database sessions
-- (m10.lease_session = 'bound', set per transaction by the Python lease client),
-- the acquiring session and the extending one (pid + backend start).  A row is
-- ORPHANED, and free at once, when
--   * the server restarted or was promoted since it was stamped: every session
--     of the holder ended with it, so the holder can no longer commit anything
--     under it without reconnecting; or
--   * its holder stamped its sessions and none of them is alive any more.
-- A holder that is in fact alive keeps its guarantees: a reconnecting heartbeat
-- re-stamps (extend_lock) while nobody has taken the lease over; once someone
-- has, its extend and its fenced writes (assert_lease: holder + token) fail.
-- Clients that do not say 'bound' (transaction pooling, where a server session
-- outlives its client; other layers calling acquire_lock from short sessions)
-- keep TTL semantics apart from the restart/promotion rule.
--
-- Tokens: the sequence logs ahead only 32 values, so a promotion that loses
-- more WAL than that could reissue tokens.  A token is never below
-- (timeline - 1) << 40: the first token drawn on a new timeline jumps past
-- every token any earlier timeline could have drawn (2^40 per timeline).

ALTER TABLE m10_recovery.distributed_locks
    ADD COLUMN server_started_at    timestamptz,
    ADD COLUMN timeline             integer,
    ADD COLUMN holder_pid           integer,
    ADD COLUMN holder_backend_start timestamptz,
    ADD COLUMN beat_pid             integer,
    ADD COLUMN beat_backend_start   timestamptz;

-- The WAL timeline this server writes on (NULL on a standby: nothing is written there).
-- pg_walfile_name() names the insertion timeline at once; pg_control_checkpoint()'s
-- would lag until the first checkpoint after a promotion.
CREATE FUNCTION m10_recovery.current_timeline()
RETURNS integer
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN pg_is_in_recovery() THEN NULL
                ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::integer
           END;
$$;
ALTER FUNCTION m10_recovery.current_timeline() OWNER TO m10_ops;

-- Whether this transaction's client bound its lease to its sessions (see above).
CREATE FUNCTION m10_recovery.lease_session_bound()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(current_setting('m10.lease_session', true), '') = 'bound';
$$;
ALTER FUNCTION m10_recovery.lease_session_bound() OWNER TO m10_ops;

-- This session's start, to tell a recycled pid from the stamped session.
CREATE FUNCTION m10_recovery.own_backend_start()
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid();
$$;
ALTER FUNCTION m10_recovery.own_backend_start() OWNER TO m10_ops;

-- A stamped session still exists.  A session the caller may not inspect (another role's:
-- backend_start hidden) counts as alive: never free a lease on a guess.
CREATE FUNCTION m10_recovery.session_alive(p_pid integer, p_started timestamptz)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p_pid IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_stat_activity a
                    WHERE a.pid = p_pid
                      AND (a.backend_start IS NULL OR a.backend_start = p_started));
$$;
ALTER FUNCTION m10_recovery.session_alive(integer, timestamptz) OWNER TO m10_ops;

-- The row's holder provably cannot commit under it any more (see the top of this file).
CREATE FUNCTION m10_recovery.lease_orphaned(l m10_recovery.distributed_locks)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (l.server_started_at IS NOT NULL
            AND l.server_started_at IS DISTINCT FROM pg_postmaster_start_time())
        OR (l.timeline IS NOT NULL
            AND l.timeline IS DISTINCT FROM m10_recovery.current_timeline())
        OR (l.holder_pid IS NOT NULL
            AND NOT m10_recovery.session_alive(l.holder_pid, l.holder_backend_start)
            AND NOT m10_recovery.session_alive(l.beat_pid, l.beat_backend_start));
$$;
ALTER FUNCTION m10_recovery.lease_orphaned(m10_recovery.distributed_locks) OWNER TO m10_ops;

-- Live: unexpired and not orphaned.  What acquire_lock, `m10 locks` and the runner's
-- busy probe mean by "held".
CREATE FUNCTION m10_recovery.lease_live(l m10_recovery.distributed_locks)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT l.expires_at > clock_timestamp() AND NOT m10_recovery.lease_orphaned(l);
$$;
ALTER FUNCTION m10_recovery.lease_live(m10_recovery.distributed_locks) OWNER TO m10_ops;

-- The next fencing token: never below (timeline - 1) << 40.  The bump is taken under an
-- advisory lock so that two first acquirers on a new timeline cannot both setval.
CREATE FUNCTION m10_recovery.next_fencing_token()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_floor bigint := (coalesce(m10_recovery.current_timeline(), 1) - 1)::bigint << 40;
    v_token bigint := nextval('m10_recovery.fencing_token_seq');
BEGIN
    IF v_token <= v_floor THEN
        PERFORM pg_advisory_xact_lock(hashtext('m10_recovery.fencing_token_seq'));
        v_token := nextval('m10_recovery.fencing_token_seq');
        IF v_token <= v_floor THEN
            PERFORM setval('m10_recovery.fencing_token_seq', v_floor + 1, false);
            v_token := nextval('m10_recovery.fencing_token_seq');
        END IF;
    END IF;
    RETURN v_token;
END
$$;
ALTER FUNCTION m10_recovery.next_fencing_token() OWNER TO m10_ops;

-- As 080's, with "live" meaning lease_live(), and the row stamped.
CREATE OR REPLACE FUNCTION m10_recovery.acquire_lock(p_lock_name text, p_holder_id text,
                                                     p_ttl_seconds integer DEFAULT 300)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
    v_row     m10_recovery.distributed_locks;
    v_found   boolean;
    v_now     timestamptz;
    v_token   bigint;
    v_bound   boolean := m10_recovery.lease_session_bound();
    v_pid     integer;
    v_start   timestamptz;
BEGIN
    PERFORM m10_recovery.check_lease_args(p_lock_name, p_holder_id, p_ttl_seconds);
    IF v_bound THEN
        v_pid := pg_backend_pid();
        v_start := m10_recovery.own_backend_start();
    END IF;
    -- A live lease stays live until it expires or is orphaned: say so without queueing.
    PERFORM 1 FROM m10_recovery.distributed_locks l
     WHERE l.lock_name = p_lock_name AND m10_recovery.lease_live(l);
    IF FOUND THEN
        RETURN NULL;
    END IF;
    LOOP
        BEGIN
            -- The wait, if any: a holder's fenced transaction has the row (FOR SHARE).
            SELECT * INTO v_row
              FROM m10_recovery.distributed_locks l
             WHERE l.lock_name = p_lock_name
               FOR UPDATE;
            v_found := FOUND;
            v_now := clock_timestamp();
            IF v_found THEN
                IF v_row.expires_at > v_now AND NOT m10_recovery.lease_orphaned(v_row) THEN
                    RETURN NULL;  -- live: held (not reentrant)
                END IF;
                UPDATE m10_recovery.distributed_locks
                   SET holder_id            = p_holder_id,
                       fencing_token        = m10_recovery.next_fencing_token(),
                       acquired_at          = v_now,
                       expires_at           = v_now + make_interval(secs => p_ttl_seconds),
                       extended_at          = NULL,
                       server_started_at    = pg_postmaster_start_time(),
                       timeline             = m10_recovery.current_timeline(),
                       holder_pid           = v_pid,
                       holder_backend_start = v_start,
                       beat_pid             = NULL,
                       beat_backend_start   = NULL
                 WHERE lock_name = p_lock_name
                RETURNING fencing_token INTO v_token;
                RETURN v_token;
            END IF;
            -- No row: insert one.  A concurrent acquirer's insert makes this wait
            -- for it and then do nothing; the loop then judges that row.
            INSERT INTO m10_recovery.distributed_locks
                   (lock_name, holder_id, fencing_token, acquired_at, expires_at,
                    server_started_at, timeline, holder_pid, holder_backend_start)
            VALUES (p_lock_name, p_holder_id, m10_recovery.next_fencing_token(),
                    v_now, v_now + make_interval(secs => p_ttl_seconds),
                    pg_postmaster_start_time(), m10_recovery.current_timeline(),
                    v_pid, v_start)
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

-- As 080's, and the extension re-stamps the server (a holder whose heartbeat reconnected
-- after a restart keeps its lease unless someone took it first) and, when bound, the
-- extending session.  An orphaned lease is still the holder's to extend until taken over:
-- the holder is evidently alive.
CREATE OR REPLACE FUNCTION m10_recovery.extend_lock(p_lock_name text, p_holder_id text,
                                                    p_fencing_token bigint,
                                                    p_ttl_seconds integer DEFAULT 300)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now   timestamptz;
    v_bound boolean := m10_recovery.lease_session_bound();
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
       SET expires_at         = v_now + make_interval(secs => p_ttl_seconds),
           extended_at        = v_now,
           server_started_at  = pg_postmaster_start_time(),
           timeline           = m10_recovery.current_timeline(),
           beat_pid           = CASE WHEN v_bound THEN pg_backend_pid() ELSE beat_pid END,
           beat_backend_start = CASE WHEN v_bound THEN m10_recovery.own_backend_start()
                                     ELSE beat_backend_start END
     WHERE lock_name = p_lock_name
       AND holder_id = p_holder_id
       AND (p_fencing_token IS NULL OR fencing_token = p_fencing_token)
       AND expires_at > v_now;
    RETURN FOUND;
END
$$;

-- reclaim_gc also collects orphaned rows (the next acquire would take them anyway).
CREATE OR REPLACE FUNCTION m10_recovery.reclaim_expired_locks()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    DELETE FROM m10_recovery.distributed_locks
     WHERE lock_name IN (SELECT l.lock_name FROM m10_recovery.distributed_locks l
                          WHERE NOT m10_recovery.lease_live(l)
                            FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
