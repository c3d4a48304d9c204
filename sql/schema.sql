-- The current schema of m10jobs' own schemas (m10_recovery, aos_cost): what
-- `m10 db migrate` from zero produces, as pg_dump --schema-only prints it with
-- comments, SET lines and blank lines removed.  Generated, do not edit:
-- `make schema` rewrites it after a new migration; tests/integration/test_schema.py
-- fails while it differs.  `m10 db schema --check` compares a live database.
CREATE SCHEMA aos_cost;
ALTER SCHEMA aos_cost OWNER TO m10_ops;
CREATE SCHEMA m10_recovery;
ALTER SCHEMA m10_recovery OWNER TO m10_ops;
CREATE FUNCTION m10_recovery.acquire_lock(p_lock_name text, p_holder_id text, p_ttl_seconds integer DEFAULT 300) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    SET lock_timeout TO '2s'
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
    PERFORM 1 FROM m10_recovery.distributed_locks l
     WHERE l.lock_name = p_lock_name AND m10_recovery.lease_live(l);
    IF FOUND THEN
        RETURN NULL;
    END IF;
    LOOP
        BEGIN
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
ALTER FUNCTION m10_recovery.acquire_lock(p_lock_name text, p_holder_id text, p_ttl_seconds integer) OWNER TO m10_ops;
COMMENT ON FUNCTION m10_recovery.acquire_lock(p_lock_name text, p_holder_id text, p_ttl_seconds integer) IS 'Lease: fencing token or NULL while held (050: gives up after 2 s on a fenced row).';
CREATE FUNCTION m10_recovery.assert_lease(p_lock_name text, p_holder_id text, p_fencing_token bigint) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
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
    PERFORM set_config('idle_in_transaction_session_timeout',
                       greatest((extract(epoch FROM v_expires - v_now) * 1000)::bigint,
                                1000)::text, true);
END
$$;
ALTER FUNCTION m10_recovery.assert_lease(p_lock_name text, p_holder_id text, p_fencing_token bigint) OWNER TO m10_ops;
COMMENT ON FUNCTION m10_recovery.assert_lease(p_lock_name text, p_holder_id text, p_fencing_token bigint) IS 'Fence: raises M10LL unless the lease is live (050: bounds the caller''s idle transaction).';
CREATE FUNCTION m10_recovery.check_lease_args(p_lock_name text, p_holder_id text, p_ttl_seconds integer) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
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
ALTER FUNCTION m10_recovery.check_lease_args(p_lock_name text, p_holder_id text, p_ttl_seconds integer) OWNER TO m10_ops;
CREATE FUNCTION m10_recovery.current_timeline() RETURNS integer
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT CASE WHEN pg_is_in_recovery() THEN NULL
                ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::integer
           END;
$$;
ALTER FUNCTION m10_recovery.current_timeline() OWNER TO m10_ops;
CREATE FUNCTION m10_recovery.enqueue_outbox(p_event_type text, p_payload jsonb, p_aggregate_type text DEFAULT NULL::text, p_aggregate_id text DEFAULT NULL::text, p_idempotency_key text DEFAULT NULL::text) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
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
    ELSE
        PERFORM pg_notify('m10_outbox', '');
    END IF;
    RETURN v_id;
END
$$;
ALTER FUNCTION m10_recovery.enqueue_outbox(p_event_type text, p_payload jsonb, p_aggregate_type text, p_aggregate_id text, p_idempotency_key text) OWNER TO m10_ops;
CREATE FUNCTION m10_recovery.extend_lock(p_lock_name text, p_holder_id text, p_fencing_token bigint, p_ttl_seconds integer DEFAULT 300) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v_now   timestamptz;
    v_bound boolean := m10_recovery.lease_session_bound();
BEGIN
    PERFORM m10_recovery.check_lease_args(p_lock_name, p_holder_id, p_ttl_seconds);
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
ALTER FUNCTION m10_recovery.extend_lock(p_lock_name text, p_holder_id text, p_fencing_token bigint, p_ttl_seconds integer) OWNER TO m10_ops;
CREATE FUNCTION m10_recovery.force_release_lock(p_lock_name text) RETURNS TABLE(holder_id text, fencing_token bigint, expires_at timestamp with time zone)
    LANGUAGE sql
    SET search_path TO 'pg_catalog', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
    DELETE FROM m10_recovery.distributed_locks l
     WHERE l.lock_name = p_lock_name
    RETURNING l.holder_id, l.fencing_token, l.expires_at;
$$;
ALTER FUNCTION m10_recovery.force_release_lock(p_lock_name text) OWNER TO m10_ops;
COMMENT ON FUNCTION m10_recovery.force_release_lock(p_lock_name text) IS 'Operator release (050: raises 55P03 after 2 s on a fenced row).';
CREATE TABLE m10_recovery.distributed_locks (
    lock_name text NOT NULL,
    holder_id text NOT NULL,
    fencing_token bigint NOT NULL,
    acquired_at timestamp with time zone NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    extended_at timestamp with time zone,
    server_started_at timestamp with time zone,
    timeline integer,
    holder_pid integer,
    holder_backend_start timestamp with time zone,
    beat_pid integer,
    beat_backend_start timestamp with time zone,
    CONSTRAINT distributed_locks_check CHECK ((expires_at > acquired_at))
);
ALTER TABLE m10_recovery.distributed_locks OWNER TO m10_ops;
CREATE FUNCTION m10_recovery.lease_live(l m10_recovery.distributed_locks) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT l.expires_at > clock_timestamp() AND NOT m10_recovery.lease_orphaned(l);
$$;
ALTER FUNCTION m10_recovery.lease_live(l m10_recovery.distributed_locks) OWNER TO m10_ops;
CREATE FUNCTION m10_recovery.lease_orphaned(l m10_recovery.distributed_locks) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT (l.server_started_at IS NOT NULL
            AND l.server_started_at IS DISTINCT FROM pg_postmaster_start_time())
        OR (l.timeline IS NOT NULL
            AND l.timeline IS DISTINCT FROM m10_recovery.current_timeline())
        OR (l.holder_pid IS NOT NULL
            AND NOT m10_recovery.session_alive(l.holder_pid, l.holder_backend_start)
            AND NOT m10_recovery.session_alive(l.beat_pid, l.beat_backend_start));
$$;
ALTER FUNCTION m10_recovery.lease_orphaned(l m10_recovery.distributed_locks) OWNER TO m10_ops;
CREATE FUNCTION m10_recovery.lease_session_bound() RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT coalesce(current_setting('m10.lease_session', true), '') = 'bound';
$$;
ALTER FUNCTION m10_recovery.lease_session_bound() OWNER TO m10_ops;
CREATE FUNCTION m10_recovery.next_fencing_token() RETURNS bigint
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
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
CREATE FUNCTION m10_recovery.own_backend_start() RETURNS timestamp with time zone
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid();
$$;
ALTER FUNCTION m10_recovery.own_backend_start() OWNER TO m10_ops;
CREATE FUNCTION m10_recovery.reclaim_expired_locks() RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
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
ALTER FUNCTION m10_recovery.reclaim_expired_locks() OWNER TO m10_ops;
COMMENT ON FUNCTION m10_recovery.reclaim_expired_locks() IS 'GC of lapsed leases (050: skips rows a fenced transaction holds).';
CREATE FUNCTION m10_recovery.release_lock(p_lock_name text, p_holder_id text, p_fencing_token bigint DEFAULT NULL::bigint) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
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
ALTER FUNCTION m10_recovery.release_lock(p_lock_name text, p_holder_id text, p_fencing_token bigint) OWNER TO m10_ops;
CREATE FUNCTION m10_recovery.session_alive(p_pid integer, p_started timestamp with time zone) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT p_pid IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_stat_activity a
                    WHERE a.pid = p_pid
                      AND (a.backend_start IS NULL OR a.backend_start = p_started));
$$;
ALTER FUNCTION m10_recovery.session_alive(p_pid integer, p_started timestamp with time zone) OWNER TO m10_ops;
CREATE TABLE aos_cost.anomalies (
    day date NOT NULL,
    tenant_id text NOT NULL,
    category text NOT NULL,
    amount_usd numeric NOT NULL,
    mean_usd numeric NOT NULL,
    stddev_usd numeric NOT NULL,
    threshold_usd numeric NOT NULL,
    k numeric NOT NULL,
    min_amount_usd numeric NOT NULL,
    detected_at timestamp with time zone DEFAULT now() NOT NULL,
    fencing_token bigint
);
ALTER TABLE aos_cost.anomalies OWNER TO m10_ops;
CREATE TABLE aos_cost.cost_baselines (
    day date NOT NULL,
    tenant_id text NOT NULL,
    category text NOT NULL,
    window_days integer NOT NULL,
    days_observed integer NOT NULL,
    mean_usd numeric NOT NULL,
    stddev_usd numeric NOT NULL,
    computed_at timestamp with time zone DEFAULT now() NOT NULL,
    fencing_token bigint
);
ALTER TABLE aos_cost.cost_baselines OWNER TO m10_ops;
CREATE TABLE aos_cost.cost_records (
    id bigint NOT NULL,
    occurred_at timestamp with time zone NOT NULL,
    tenant_id text NOT NULL,
    category text NOT NULL,
    amount_usd numeric NOT NULL,
    CONSTRAINT cost_records_category_check CHECK ((category <> ''::text)),
    CONSTRAINT cost_records_tenant_id_check CHECK ((tenant_id <> ''::text))
);
ALTER TABLE aos_cost.cost_records OWNER TO aos_cost_source;
ALTER TABLE aos_cost.cost_records ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME aos_cost.cost_records_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);
CREATE TABLE aos_cost.cost_snapshots (
    granularity text NOT NULL,
    period_start timestamp with time zone NOT NULL,
    tenant_id text NOT NULL,
    category text NOT NULL,
    amount_usd numeric NOT NULL,
    record_count bigint NOT NULL,
    taken_at timestamp with time zone DEFAULT now() NOT NULL,
    fencing_token bigint,
    CONSTRAINT cost_snapshots_check CHECK ((period_start = date_trunc(granularity, period_start, 'UTC'::text))),
    CONSTRAINT cost_snapshots_granularity_check CHECK ((granularity = ANY (ARRAY['hour'::text, 'day'::text]))),
    CONSTRAINT cost_snapshots_record_count_check CHECK ((record_count >= 0))
);
ALTER TABLE aos_cost.cost_snapshots OWNER TO m10_ops;
CREATE TABLE aos_cost.snapshot_periods (
    granularity text NOT NULL,
    period_start timestamp with time zone NOT NULL,
    rows_written integer NOT NULL,
    amount_usd numeric NOT NULL,
    record_count bigint NOT NULL,
    source_mismatches integer DEFAULT 0 NOT NULL,
    taken_at timestamp with time zone DEFAULT now() NOT NULL,
    fencing_token bigint,
    CONSTRAINT snapshot_periods_check CHECK ((period_start = date_trunc(granularity, period_start, 'UTC'::text))),
    CONSTRAINT snapshot_periods_granularity_check CHECK ((granularity = ANY (ARRAY['hour'::text, 'day'::text])))
);
ALTER TABLE aos_cost.snapshot_periods OWNER TO m10_ops;
CREATE TABLE m10_recovery.daily_stats (
    day date NOT NULL,
    timezone text NOT NULL,
    outbox_enqueued bigint,
    outbox_published bigint,
    publish_latency_p50_ms numeric,
    publish_latency_p95_ms numeric,
    dead_lettered bigint,
    dl_reconciled bigint,
    retention_rows_deleted bigint,
    locks_reclaimed bigint,
    synthetic_sent bigint,
    synthetic_arrived bigint,
    computed_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    host text NOT NULL,
    fencing_token bigint NOT NULL
);
ALTER TABLE m10_recovery.daily_stats OWNER TO m10_ops;
CREATE TABLE m10_recovery.dead_letter_archive (
    id bigint NOT NULL,
    dl_stream text NOT NULL,
    dl_entry_id text NOT NULL,
    source_stream text,
    source_entry_id text,
    event_id bigint,
    idempotency_key text,
    event_type text,
    aggregate_type text,
    aggregate_id text,
    payload text,
    fields jsonb DEFAULT '{}'::jsonb NOT NULL,
    reason text NOT NULL,
    delivery_count integer,
    dead_lettered_at timestamp with time zone DEFAULT now() NOT NULL,
    archived_at timestamp with time zone DEFAULT now() NOT NULL,
    reconcile_outcome text,
    reconcile_attempts integer DEFAULT 0 NOT NULL,
    reconciled_at timestamp with time zone,
    replay_event_id bigint,
    lineage_key text,
    refusal text,
    discarded_by text,
    discard_reason text,
    CONSTRAINT dead_letter_archive_discard_check CHECK (((reconcile_outcome IS DISTINCT FROM 'discarded'::text) OR ((discarded_by IS NOT NULL) AND (discard_reason IS NOT NULL)))),
    CONSTRAINT dead_letter_archive_reconcile_outcome_check CHECK ((reconcile_outcome = ANY (ARRAY['already_processed'::text, 'replayed'::text, 'abandoned'::text, 'discarded'::text]))),
    CONSTRAINT dead_letter_archive_refusal_check CHECK ((refusal = ANY (ARRAY['size'::text, 'shape'::text])))
);
ALTER TABLE m10_recovery.dead_letter_archive OWNER TO m10_ops;
ALTER TABLE m10_recovery.dead_letter_archive ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME m10_recovery.dead_letter_archive_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);
CREATE SEQUENCE m10_recovery.fencing_token_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER TABLE m10_recovery.fencing_token_seq OWNER TO m10_ops;
CREATE TABLE m10_recovery.hosts (
    host text NOT NULL,
    release text NOT NULL,
    requires text NOT NULL,
    knows text NOT NULL,
    seen_at timestamp with time zone DEFAULT now() NOT NULL
);
ALTER TABLE m10_recovery.hosts OWNER TO m10_ops;
CREATE TABLE m10_recovery.job_runs (
    id bigint NOT NULL,
    host text NOT NULL,
    job text NOT NULL,
    task text NOT NULL,
    lock_name text,
    run_id text NOT NULL,
    started_at timestamp with time zone NOT NULL,
    ended_at timestamp with time zone NOT NULL,
    exit_code integer NOT NULL,
    status text NOT NULL,
    error text,
    summary jsonb DEFAULT '{}'::jsonb NOT NULL
);
ALTER TABLE m10_recovery.job_runs OWNER TO m10_ops;
ALTER TABLE m10_recovery.job_runs ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME m10_recovery.job_runs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);
CREATE TABLE m10_recovery.matview_refreshes (
    view_name text NOT NULL,
    refreshed_at timestamp with time zone NOT NULL,
    duration_ms bigint NOT NULL,
    was_concurrent boolean NOT NULL,
    run_id text NOT NULL
);
ALTER TABLE m10_recovery.matview_refreshes OWNER TO m10_ops;
CREATE TABLE m10_recovery.outbox (
    id bigint NOT NULL,
    event_type text NOT NULL,
    aggregate_type text,
    aggregate_id text,
    payload jsonb NOT NULL,
    idempotency_key text,
    status text DEFAULT 'pending'::text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone DEFAULT now() NOT NULL,
    last_error text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    published_at timestamp with time zone,
    stream text,
    stream_entry_id text,
    dead_letters integer DEFAULT 0 NOT NULL,
    dead_lettered_at timestamp with time zone,
    CONSTRAINT outbox_event_type_check CHECK ((event_type <> ''::text)),
    CONSTRAINT outbox_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'published'::text, 'dead_lettered'::text])))
);
ALTER TABLE m10_recovery.outbox OWNER TO m10_ops;
ALTER TABLE m10_recovery.outbox ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME m10_recovery.outbox_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);
CREATE TABLE m10_recovery.replay_log (
    id bigint NOT NULL,
    event_id bigint NOT NULL,
    idempotency_key text,
    event_type text NOT NULL,
    stream text NOT NULL,
    stream_entry_id text NOT NULL,
    fencing_token bigint NOT NULL,
    holder_id text NOT NULL,
    enqueued_at timestamp with time zone NOT NULL,
    published_at timestamp with time zone DEFAULT now() NOT NULL
);
ALTER TABLE m10_recovery.replay_log OWNER TO m10_ops;
ALTER TABLE m10_recovery.replay_log ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME m10_recovery.replay_log_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);
CREATE TABLE m10_recovery.retention_jobs (
    id bigint NOT NULL,
    run_id text NOT NULL,
    policy text NOT NULL,
    target text NOT NULL,
    cutoff timestamp with time zone NOT NULL,
    status text DEFAULT 'running'::text NOT NULL,
    rows_archived bigint DEFAULT 0 NOT NULL,
    rows_deleted bigint DEFAULT 0 NOT NULL,
    archive_location text,
    error text,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    finished_at timestamp with time zone,
    duration_ms bigint,
    CONSTRAINT retention_jobs_status_check CHECK ((status = ANY (ARRAY['running'::text, 'succeeded'::text, 'failed'::text])))
);
ALTER TABLE m10_recovery.retention_jobs OWNER TO m10_ops;
ALTER TABLE m10_recovery.retention_jobs ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME m10_recovery.retention_jobs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);
CREATE TABLE m10_recovery.rollback_actions (
    report_run_id text NOT NULL,
    host text NOT NULL,
    lock_name text NOT NULL,
    holder_id text NOT NULL,
    fencing_token bigint NOT NULL,
    rollback_run_id text NOT NULL,
    command jsonb NOT NULL,
    verdict text NOT NULL,
    started_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    finished_at timestamp with time zone,
    outcome text,
    exit_status integer,
    duration_s numeric,
    set_flags jsonb,
    flags_applied_at timestamp with time zone,
    CONSTRAINT rollback_actions_check CHECK (((finished_at IS NULL) = (outcome IS NULL))),
    CONSTRAINT rollback_actions_outcome_check CHECK ((outcome = ANY (ARRAY['succeeded'::text, 'failed'::text, 'timeout'::text, 'error'::text]))),
    CONSTRAINT rollback_actions_report_run_id_check CHECK ((report_run_id <> ''::text))
);
ALTER TABLE m10_recovery.rollback_actions OWNER TO m10_ops;
CREATE TABLE m10_recovery.schema_migrations (
    version text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL,
    compatible_with text,
    release text
);
ALTER TABLE m10_recovery.schema_migrations OWNER TO postgres;
ALTER TABLE ONLY aos_cost.anomalies
    ADD CONSTRAINT anomalies_pkey PRIMARY KEY (day, tenant_id, category);
ALTER TABLE ONLY aos_cost.cost_baselines
    ADD CONSTRAINT cost_baselines_pkey PRIMARY KEY (day, tenant_id, category);
ALTER TABLE ONLY aos_cost.cost_records
    ADD CONSTRAINT cost_records_pkey PRIMARY KEY (id);
ALTER TABLE ONLY aos_cost.cost_snapshots
    ADD CONSTRAINT cost_snapshots_pkey PRIMARY KEY (granularity, period_start, tenant_id, category);
ALTER TABLE ONLY aos_cost.snapshot_periods
    ADD CONSTRAINT snapshot_periods_pkey PRIMARY KEY (granularity, period_start);
ALTER TABLE ONLY m10_recovery.daily_stats
    ADD CONSTRAINT daily_stats_pkey PRIMARY KEY (day);
ALTER TABLE ONLY m10_recovery.dead_letter_archive
    ADD CONSTRAINT dead_letter_archive_dl_stream_dl_entry_id_key UNIQUE (dl_stream, dl_entry_id);
ALTER TABLE ONLY m10_recovery.dead_letter_archive
    ADD CONSTRAINT dead_letter_archive_pkey PRIMARY KEY (id);
ALTER TABLE ONLY m10_recovery.distributed_locks
    ADD CONSTRAINT distributed_locks_pkey PRIMARY KEY (lock_name);
ALTER TABLE ONLY m10_recovery.hosts
    ADD CONSTRAINT hosts_pkey PRIMARY KEY (host);
ALTER TABLE ONLY m10_recovery.job_runs
    ADD CONSTRAINT job_runs_pkey PRIMARY KEY (id);
ALTER TABLE ONLY m10_recovery.matview_refreshes
    ADD CONSTRAINT matview_refreshes_pkey PRIMARY KEY (view_name);
ALTER TABLE ONLY m10_recovery.outbox
    ADD CONSTRAINT outbox_idempotency_key_key UNIQUE (idempotency_key);
ALTER TABLE ONLY m10_recovery.outbox
    ADD CONSTRAINT outbox_pkey PRIMARY KEY (id);
ALTER TABLE ONLY m10_recovery.replay_log
    ADD CONSTRAINT replay_log_event_id_key UNIQUE (event_id);
ALTER TABLE ONLY m10_recovery.replay_log
    ADD CONSTRAINT replay_log_pkey PRIMARY KEY (id);
ALTER TABLE ONLY m10_recovery.retention_jobs
    ADD CONSTRAINT retention_jobs_pkey PRIMARY KEY (id);
ALTER TABLE ONLY m10_recovery.rollback_actions
    ADD CONSTRAINT rollback_actions_pkey PRIMARY KEY (report_run_id);
ALTER TABLE ONLY m10_recovery.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);
CREATE INDEX anomalies_tenant_idx ON aos_cost.anomalies USING btree (tenant_id, day);
CREATE INDEX cost_records_occurred_at_idx ON aos_cost.cost_records USING btree (occurred_at);
CREATE INDEX cost_snapshots_tenant_idx ON aos_cost.cost_snapshots USING btree (tenant_id, granularity, period_start);
CREATE INDEX dead_letter_archive_abandoned_idx ON m10_recovery.dead_letter_archive USING btree (id) WHERE (reconcile_outcome = 'abandoned'::text);
CREATE INDEX dead_letter_archive_dead_lettered_at_idx ON m10_recovery.dead_letter_archive USING btree (dead_lettered_at);
CREATE INDEX dead_letter_archive_lineage_idx ON m10_recovery.dead_letter_archive USING btree (lineage_key);
CREATE INDEX dead_letter_archive_reconciled_at_idx ON m10_recovery.dead_letter_archive USING btree (reconciled_at) WHERE (reconcile_outcome IS NOT NULL);
COMMENT ON INDEX m10_recovery.dead_letter_archive_reconciled_at_idx IS 'Reconciled dead letters by reconcile time (retention, daily stats). Created by 020 with predicate reconcile_outcome IS NOT NULL; 030''s same-named index was a no-op.';
CREATE INDEX dead_letter_archive_unreconciled_idx ON m10_recovery.dead_letter_archive USING btree (id) WHERE (reconcile_outcome IS NULL);
CREATE INDEX job_runs_job_started_idx ON m10_recovery.job_runs USING btree (job, started_at DESC);
CREATE INDEX job_runs_started_idx ON m10_recovery.job_runs USING btree (started_at DESC);
CREATE INDEX outbox_aggregate_idx ON m10_recovery.outbox USING btree (aggregate_type, aggregate_id, id) WHERE (status = 'pending'::text);
CREATE INDEX outbox_created_at_idx ON m10_recovery.outbox USING btree (created_at);
CREATE INDEX outbox_dead_lettered_at_idx ON m10_recovery.outbox USING btree (COALESCE(dead_lettered_at, created_at), id) WHERE (status = 'dead_lettered'::text);
CREATE INDEX outbox_dead_lettered_idx ON m10_recovery.outbox USING btree (id) WHERE (status = 'dead_lettered'::text);
CREATE INDEX outbox_held_idx ON m10_recovery.outbox USING btree (COALESCE(aggregate_type, ''::text), aggregate_id, id) WHERE ((status = 'pending'::text) AND (attempts > 0) AND (aggregate_id IS NOT NULL));
COMMENT ON INDEX m10_recovery.outbox_held_idx IS 'Events that failed and wait for a retry, by aggregate: the claim''s hold-back probe.';
CREATE INDEX outbox_pending_idx ON m10_recovery.outbox USING btree (id) WHERE (status = 'pending'::text);
CREATE INDEX outbox_published_at_idx ON m10_recovery.outbox USING btree (published_at) WHERE (status = 'published'::text);
CREATE INDEX outbox_retrying_idx ON m10_recovery.outbox USING btree (next_attempt_at) WHERE ((status = 'pending'::text) AND (attempts > 0));
CREATE INDEX outbox_synthetic_idx ON m10_recovery.outbox USING btree (created_at) WHERE (event_type = 'm10.synthetic'::text);
CREATE INDEX replay_log_idempotency_key_idx ON m10_recovery.replay_log USING btree (idempotency_key) WHERE (idempotency_key IS NOT NULL);
CREATE INDEX replay_log_published_at_idx ON m10_recovery.replay_log USING btree (published_at);
CREATE INDEX retention_jobs_finished_at_idx ON m10_recovery.retention_jobs USING btree (finished_at) WHERE (finished_at IS NOT NULL);
CREATE INDEX retention_jobs_started_at_idx ON m10_recovery.retention_jobs USING btree (started_at);
CREATE INDEX rollback_actions_started_at_idx ON m10_recovery.rollback_actions USING btree (started_at);
GRANT USAGE ON SCHEMA aos_cost TO aos_cost_source;
GRANT USAGE ON SCHEMA m10_recovery TO m10_app;
REVOKE ALL ON FUNCTION m10_recovery.acquire_lock(p_lock_name text, p_holder_id text, p_ttl_seconds integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION m10_recovery.assert_lease(p_lock_name text, p_holder_id text, p_fencing_token bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION m10_recovery.check_lease_args(p_lock_name text, p_holder_id text, p_ttl_seconds integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION m10_recovery.current_timeline() FROM PUBLIC;
REVOKE ALL ON FUNCTION m10_recovery.enqueue_outbox(p_event_type text, p_payload jsonb, p_aggregate_type text, p_aggregate_id text, p_idempotency_key text) FROM PUBLIC;
GRANT ALL ON FUNCTION m10_recovery.enqueue_outbox(p_event_type text, p_payload jsonb, p_aggregate_type text, p_aggregate_id text, p_idempotency_key text) TO m10_app;
REVOKE ALL ON FUNCTION m10_recovery.extend_lock(p_lock_name text, p_holder_id text, p_fencing_token bigint, p_ttl_seconds integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION m10_recovery.force_release_lock(p_lock_name text) FROM PUBLIC;
REVOKE ALL ON FUNCTION m10_recovery.lease_live(l m10_recovery.distributed_locks) FROM PUBLIC;
REVOKE ALL ON FUNCTION m10_recovery.lease_orphaned(l m10_recovery.distributed_locks) FROM PUBLIC;
REVOKE ALL ON FUNCTION m10_recovery.lease_session_bound() FROM PUBLIC;
REVOKE ALL ON FUNCTION m10_recovery.next_fencing_token() FROM PUBLIC;
REVOKE ALL ON FUNCTION m10_recovery.own_backend_start() FROM PUBLIC;
REVOKE ALL ON FUNCTION m10_recovery.reclaim_expired_locks() FROM PUBLIC;
REVOKE ALL ON FUNCTION m10_recovery.release_lock(p_lock_name text, p_holder_id text, p_fencing_token bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION m10_recovery.session_alive(p_pid integer, p_started timestamp with time zone) FROM PUBLIC;
GRANT SELECT ON TABLE aos_cost.cost_records TO m10_ops;
GRANT SELECT ON TABLE m10_recovery.schema_migrations TO m10_ops;
