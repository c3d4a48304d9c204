-- Outbox processor, synthetic traffic and `m10 outbox` queries (issue 3).
-- Set-based: one statement per batch, arrays in, no per-row round trips.

-- outbox_claim --
-- The next ready pending events in id order, holding back every event whose aggregate
-- (coalesce(aggregate_type, ''), aggregate_id) has an earlier event waiting for a retry.
-- The hold-back is one probe of outbox_held_idx per candidate, flat however many wait: a
-- scalar subquery, which the planner never turns into a join (as NOT EXISTS, it guessed the
-- held rows few and compared every candidate with every one of them).  Its time test is
-- written `(...) IS TRUE`, which no index can answer: as a plain `>` it let the planner take
-- outbox_retrying_idx (next_attempt_at) instead whenever the statistics predate the waiting
-- events, and read every waiting event for every candidate (2M rows, 500 held: 114 buffers
-- per candidate, 220 ms a batch instead of 9).  Statistics that know no pending event at
-- all make every partial index look free: the processor analyzes then (outbox_analyze).
-- The processor runs it after outbox_claim_plan (same transaction): an ordered walk of
-- outbox_pending_idx is the only plan left, whatever the statistics say.
-- `fields` is the stream entry (docs/contract.md, "Outbox and Redis streams"; the order of outbox_stream.OUTBOX_FIELDS) as
-- the JSON array [field, value, ...] the publish script takes: encoded here, in C, instead
-- of per field in Python (a third of the processor's CPU time).
-- A payload over %(max_payload_bytes)s (its UTF-8 JSON text, measured here) is never sent to
-- the processor: its `payload` is null and only its sha256 and first %(preview_chars)s
-- characters come back, so the processor's memory is bounded by its settings, not by what
-- was enqueued.  The inner query (ORDER BY + LIMIT, never flattened) renders each payload
-- once; the outer one measures that text.
SELECT c.id, c.event_type, c.aggregate_type, c.aggregate_id, c.attempts, c.dead_letters,
       octet_length(c.payload) AS payload_bytes,
       CASE WHEN octet_length(c.payload) > %(max_payload_bytes)s
            THEN encode(sha256(convert_to(c.payload, 'UTF8')), 'hex') END AS payload_sha256,
       CASE WHEN octet_length(c.payload) > %(max_payload_bytes)s
            THEN left(c.payload, %(preview_chars)s) END AS payload_preview,
       json_build_array(
           'event_id', c.id::text,
           'idempotency_key', coalesce(c.idempotency_key, ''),
           'event_type', c.event_type,
           'aggregate_type', coalesce(c.aggregate_type, ''),
           'aggregate_id', coalesce(c.aggregate_id, ''),
           'payload', CASE WHEN octet_length(c.payload) <= %(max_payload_bytes)s THEN c.payload END,
           'created_at', to_char(c.created_at AT TIME ZONE 'UTC',
                                 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text AS fields
  FROM (
SELECT o.id, o.event_type, o.aggregate_type, o.aggregate_id, o.attempts, o.dead_letters,
       o.idempotency_key, o.created_at, o.payload::text AS payload
  FROM m10_recovery.outbox o
 WHERE o.status = 'pending' AND o.id > %(after)s AND o.next_attempt_at <= now()
   AND (o.aggregate_id IS NULL
        OR (SELECT h.id FROM m10_recovery.outbox h
             WHERE h.status = 'pending' AND h.attempts > 0 AND h.aggregate_id IS NOT NULL
               AND coalesce(h.aggregate_type, '') = coalesce(o.aggregate_type, '')
               AND h.aggregate_id = o.aggregate_id
               AND h.id < o.id
               AND (h.next_attempt_at > now()) IS TRUE
             LIMIT 1) IS NULL)
 ORDER BY o.id
 LIMIT %(limit)s) AS c
 ORDER BY c.id;

-- outbox_claim_plan --
-- Run before outbox_claim in its transaction.  The claim is an ordered walk of
-- outbox_pending_idx that stops after `limit` rows: it reads what it returns plus what it
-- holds back.  A sort reads, probes and sorts the whole backlog first, so it is never the
-- cheaper plan; the planner picks it only when its statistics put the backlog below the
-- limit: a table not analyzed since a burst (866 ms a batch with 100,000 waiting, instead
-- of 5).  Sorts and bitmap scans are off for this transaction only.
SELECT set_config('enable_sort', 'off', true), set_config('enable_bitmapscan', 'off', true);

-- outbox_pending_estimate --
-- How many pending events the statistics know of (the planner's idea of the backlog):
-- -1 on a table never analyzed.
SELECT reltuples::bigint AS estimate FROM pg_class
 WHERE oid = 'm10_recovery.outbox_pending_idx'::regclass;

-- outbox_analyze_lock_timeout --
-- ANALYZE waits at most this long for the table (an autovacuum of it is doing the work).
SELECT set_config('lock_timeout', '200ms', true);

-- outbox_analyze --
-- Statistics for the claim's hold-back probe after a burst the last ANALYZE did not see:
-- statistics that know no pending event make every partial index on them look free, and
-- the probe may walk outbox_retrying_idx or outbox_pending_idx instead of outbox_held_idx.
ANALYZE m10_recovery.outbox;

-- outbox_mark_published --
-- Mark published events and record each in replay_log (once per event), in the fenced transaction.
WITH done AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(streams)s::text[], %(entry_ids)s::text[])
           AS d(id, stream, entry_id)
), marked AS (
    UPDATE m10_recovery.outbox o
       SET status = 'published', published_at = now(), attempts = o.attempts + 1,
           stream = d.stream, stream_entry_id = d.entry_id
      FROM done d
     WHERE o.id = d.id AND o.status = 'pending'
    RETURNING o.id, o.idempotency_key, o.event_type, o.created_at, d.stream, d.entry_id
)
INSERT INTO m10_recovery.replay_log
       (event_id, idempotency_key, event_type, stream, stream_entry_id, fencing_token,
        holder_id, enqueued_at)
SELECT id, idempotency_key, event_type, stream, entry_id, %(token)s, %(holder)s, created_at
  FROM marked
    ON CONFLICT (event_id) DO NOTHING;

-- outbox_newest_published --
-- The last event marked published within the dedup TTL (the primary key's newest row): its
-- dedup key must still be in Redis, else Redis lost acknowledged writes (the pass-start check).
SELECT event_id FROM m10_recovery.replay_log
 WHERE id = (SELECT max(id) FROM m10_recovery.replay_log)
   AND published_at > now() - make_interval(secs => %(ttl)s);

-- outbox_reconcile_window --
-- Events published within the window, newest first, bounded: what a reconciliation checks.
SELECT event_id FROM m10_recovery.replay_log
 WHERE published_at > now() - make_interval(secs => %(window)s)
 ORDER BY published_at DESC
 LIMIT %(limit)s;

-- outbox_republish_fields --
-- Published events to append again (Redis lost them): their entries built as outbox_claim
-- builds them (keep the two in step).
SELECT o.id, o.event_type,
       json_build_array(
           'event_id', o.id::text,
           'idempotency_key', coalesce(o.idempotency_key, ''),
           'event_type', o.event_type,
           'aggregate_type', coalesce(o.aggregate_type, ''),
           'aggregate_id', coalesce(o.aggregate_id, ''),
           'payload', o.payload::text,
           'created_at', to_char(o.created_at AT TIME ZONE 'UTC',
                                 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text AS fields
  FROM m10_recovery.outbox o
 WHERE o.id = ANY(%(ids)s::bigint[]) AND o.status = 'published'
 ORDER BY o.id;

-- outbox_mark_republished --
-- Record the new entry ids of events appended again, in the fenced transaction.
WITH done AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(streams)s::text[], %(entry_ids)s::text[])
           AS d(id, stream, entry_id)
), o AS (
    UPDATE m10_recovery.outbox o SET stream = d.stream, stream_entry_id = d.entry_id
      FROM done d WHERE o.id = d.id
)
UPDATE m10_recovery.replay_log r SET stream = d.stream, stream_entry_id = d.entry_id
  FROM done d WHERE r.event_id = d.id;

-- outbox_mark_failed --
-- Count a failed attempt and schedule the retry (delay computed with backoff and jitter).
UPDATE m10_recovery.outbox o
   SET attempts = o.attempts + 1, last_error = f.error,
       next_attempt_at = now() + make_interval(secs => f.delay)
  FROM unnest(%(ids)s::bigint[], %(errors)s::text[], %(delays)s::float8[]) AS f(id, error, delay)
 WHERE o.id = f.id AND o.status = 'pending';

-- outbox_mark_dead_lettered --
-- Mark events dead-lettered and archive their dead-letter stream entries (once per entry).
-- A refused payload (fields.refusal, e.g. 'size') is not copied: it stays in the outbox row.
WITH dl AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(reasons)s::text[], %(entry_ids)s::text[],
                         %(sources)s::text[], %(fields)s::jsonb[])
           AS d(id, reason, entry_id, source, fields)
), marked AS (
    UPDATE m10_recovery.outbox o
       SET status = 'dead_lettered', attempts = o.attempts + 1, dead_lettered_at = now(),
           dead_letters = o.dead_letters + 1, last_error = dl.reason
      FROM dl
     WHERE o.id = dl.id AND o.status = 'pending'
    RETURNING o.id, o.idempotency_key, o.event_type, o.aggregate_type, o.aggregate_id,
              o.payload, o.attempts, dl.reason, dl.entry_id, dl.source, dl.fields
)
INSERT INTO m10_recovery.dead_letter_archive
       (dl_stream, dl_entry_id, source_stream, event_id, idempotency_key, event_type,
        aggregate_type, aggregate_id, payload, fields, reason, delivery_count, refusal)
SELECT %(dl_stream)s, entry_id, source, id, idempotency_key, event_type, aggregate_type,
       aggregate_id, CASE WHEN fields->>'refusal' IS NULL THEN payload::text END, fields,
       reason, attempts, fields->>'refusal'
  FROM marked
    ON CONFLICT (dl_stream, dl_entry_id) DO NOTHING;

-- outbox_backlog --
-- Pending events, how many are ready now, the oldest pending age, failing and dead-lettered counts.
-- Counts are exact up to 10,000; above, the row count PostgreSQL keeps for the matching partial
-- index (as of the last (auto)vacuum/analyze): a million-event backlog costs no full count.
SELECT (SELECT CASE WHEN n <= 10000 THEN n ELSE greatest(n, (SELECT reltuples::bigint
                 FROM pg_class WHERE oid = 'm10_recovery.outbox_pending_idx'::regclass)) END
                 FROM (SELECT count(*) AS n FROM (SELECT FROM m10_recovery.outbox
                        WHERE status = 'pending' LIMIT 10001) AS capped) AS c) AS backlog,
       (SELECT CASE WHEN n <= 10000 THEN n ELSE greatest(n, (SELECT reltuples::bigint
          FROM pg_class WHERE oid = 'm10_recovery.outbox_retrying_idx'::regclass)) END
          FROM (SELECT count(*) AS n FROM (SELECT FROM m10_recovery.outbox
                 WHERE status = 'pending' AND attempts > 0 LIMIT 10001) AS capped) AS c)
           AS retrying,
       (SELECT CASE WHEN n <= 10000 THEN n ELSE greatest(n, (SELECT reltuples::bigint
          FROM pg_class WHERE oid = 'm10_recovery.outbox_dead_lettered_idx'::regclass)) END
          FROM (SELECT count(*) AS n FROM (SELECT FROM m10_recovery.outbox
                 WHERE status = 'dead_lettered' LIMIT 10001) AS capped) AS c)
           AS dead_lettered,
       coalesce((SELECT extract(epoch FROM now() - created_at)::float8
                   FROM m10_recovery.outbox WHERE status = 'pending'
                  ORDER BY id LIMIT 1), 0) AS oldest_pending_age_s;

-- outbox_status_extra --
-- For `m10 outbox status`: unreconciled dead letters and the last publish.
SELECT (SELECT count(*) FROM m10_recovery.dead_letter_archive
         WHERE reconcile_outcome IS NULL) AS dead_letters_unreconciled,
       (SELECT max(published_at) FROM m10_recovery.replay_log) AS last_published_at;

-- outbox_event --
-- One outbox event by id (operator retry).
SELECT id, event_type, status, attempts, dead_letters, last_error, created_at, published_at
  FROM m10_recovery.outbox
 WHERE id = %(id)s;

-- outbox_retry_event --
-- Put a dead-lettered or failing event back in the queue now (operator retry).
UPDATE m10_recovery.outbox
   SET status = 'pending', attempts = 0, next_attempt_at = now()
 WHERE id = %(id)s AND status IN ('pending', 'dead_lettered')
RETURNING id, status;

-- outbox_problem_events --
-- Dead-lettered and failing events, newest first (operator listing).
SELECT id, event_type, aggregate_type, aggregate_id, status, attempts, dead_letters,
       next_attempt_at, left(last_error, 200) AS last_error
  FROM m10_recovery.outbox
 WHERE status = 'dead_lettered' OR (status = 'pending' AND attempts > 0)
 ORDER BY id DESC
 LIMIT %(limit)s;

-- synthetic_enqueue --
-- Enqueue one synthetic event through the public function, as other layers do.
SELECT m10_recovery.enqueue_outbox('m10.synthetic', %(payload)s::jsonb, 'm10.synthetic', NULL,
                                   %(key)s) AS id;

-- synthetic_recent --
-- Synthetic events of earlier runs: every one still pending (however old: a long stall must
-- not age out of view) and the others enqueued within the lookback window.
SELECT o.id, o.status, o.stream, o.stream_entry_id,
       extract(epoch FROM now() - o.created_at)::float8 AS age_s,
       extract(epoch FROM o.published_at - o.created_at)::float8 AS latency_s
  FROM m10_recovery.outbox o
 WHERE o.event_type = 'm10.synthetic' AND o.status = 'pending'
UNION ALL
SELECT o.id, o.status, o.stream, o.stream_entry_id,
       extract(epoch FROM now() - o.created_at)::float8 AS age_s,
       extract(epoch FROM o.published_at - o.created_at)::float8 AS latency_s
  FROM m10_recovery.outbox o
 WHERE o.event_type = 'm10.synthetic' AND o.status <> 'pending'
   AND o.created_at >= now() - make_interval(secs => %(lookback)s)
 ORDER BY id;
