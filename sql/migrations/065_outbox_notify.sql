-- Low-latency outbox: enqueue_outbox() notifies channel m10_outbox when it
-- inserts a new event, so a lingering m10-outbox-processor pass (LISTEN) drains
-- it within milliseconds instead of at the next timer tick.  The notification
-- is sent at commit (none for a rolled-back or repeated enqueue), and
-- PostgreSQL folds a transaction's identical notifications into one, so a
-- producer enqueueing many events in one transaction sends one.  Same
-- signature, owner and grants as 002's function.
CREATE OR REPLACE FUNCTION m10_recovery.enqueue_outbox(p_event_type text, p_payload jsonb,
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
    ELSE
        PERFORM pg_notify('m10_outbox', '');
    END IF;
    RETURN v_id;
END
$$;
