-- Maintenance orchestrator queries (m10-maintenance tasks and `m10 dl` / `m10 retention`).

-- outbox_leader_health --
-- The m10:outbox_processor lease and the outbox backlog, by the database clock.  The oldest
-- pending event is the first by id (outbox_pending_idx), never a walk over published rows.
SELECT l.holder_id, l.fencing_token,
       extract(epoch FROM clock_timestamp() - l.acquired_at)::float8 AS age_s,
       extract(epoch FROM l.expires_at - clock_timestamp())::float8 AS expires_in_s,
       -- exact up to 10,000, then outbox_pending_idx's row count (see outbox_backlog)
       (SELECT CASE WHEN n <= 10000 THEN n ELSE greatest(n, (SELECT reltuples::bigint
                 FROM pg_class WHERE oid = 'm10_recovery.outbox_pending_idx'::regclass)) END
                 FROM (SELECT count(*) AS n FROM (SELECT FROM m10_recovery.outbox
                        WHERE status = 'pending' LIMIT 10001) AS capped) AS c) AS pending,
       (SELECT extract(epoch FROM clock_timestamp() - created_at)::float8
          FROM m10_recovery.outbox WHERE status = 'pending'
         ORDER BY id LIMIT 1) AS oldest_pending_age_s
  FROM (SELECT 1) AS one
  LEFT JOIN m10_recovery.distributed_locks l ON l.lock_name = %(name)s;

-- dl_archive_insert --
-- Store one dead-letter stream entry; a second copy of the same entry is ignored.
INSERT INTO m10_recovery.dead_letter_archive
       (dl_stream, dl_entry_id, source_stream, source_entry_id, event_id, idempotency_key,
        event_type, aggregate_type, aggregate_id, payload, fields, reason, delivery_count,
        dead_lettered_at, lineage_key, refusal)
VALUES (%(dl_stream)s, %(dl_entry_id)s, %(source_stream)s, %(source_entry_id)s, %(event_id)s,
        %(idempotency_key)s, %(event_type)s, %(aggregate_type)s, %(aggregate_id)s,
        %(payload)s, %(fields)s, %(reason)s, %(delivery_count)s,
        coalesce(%(dead_lettered_at)s, now()), %(lineage_key)s, %(refusal)s)
ON CONFLICT (dl_stream, dl_entry_id) DO NOTHING;

-- dl_unreconciled --
-- The next unreconciled dead letters, locked for this transaction.  A payload larger than
-- %(max_payload_bytes)s (outbox.max_payload_bytes: a replay would be refused for it) is not
-- fetched, only its size (nor `fields`, which may repeat it): a pass's memory is bounded by
-- its settings, not by the archive.
SELECT
       id, dl_stream, dl_entry_id, source_stream, source_entry_id, event_id, idempotency_key,
       event_type, aggregate_type, aggregate_id, reason, delivery_count,
       dead_lettered_at, archived_at, reconcile_outcome, reconcile_attempts, reconciled_at,
       replay_event_id, lineage_key, refusal, discarded_by, discard_reason,
       coalesce(octet_length(payload), CASE WHEN fields->>'payload_bytes' ~ '^[0-9]{1,18}$'
                THEN (fields->>'payload_bytes')::bigint END) AS payload_bytes,
       CASE WHEN octet_length(payload) <= %(max_payload_bytes)s THEN payload END AS payload
  FROM m10_recovery.dead_letter_archive
 WHERE reconcile_outcome IS NULL
 ORDER BY id
 LIMIT %(limit)s
   FOR UPDATE SKIP LOCKED;

-- dl_count_unreconciled --
-- How many dead letters await reconciliation (for --dry-run).
SELECT count(*) AS n FROM m10_recovery.dead_letter_archive WHERE reconcile_outcome IS NULL;

-- dl_count_abandoned --
-- Abandoned dead letters not replayed since (the m10_dead_letters_abandoned gauge; partial index).
-- Exact up to 10,000, then the partial index's row count (as outbox_backlog): after an incident
-- with a million of them, every maintenance pass would otherwise count them all.
SELECT (SELECT CASE WHEN n <= 10000 THEN n ELSE greatest(n, (SELECT reltuples::bigint
          FROM pg_class WHERE oid = 'm10_recovery.dead_letter_archive_abandoned_idx'::regclass)) END
          FROM (SELECT count(*) AS n FROM (SELECT FROM m10_recovery.dead_letter_archive
                 WHERE reconcile_outcome = 'abandoned' LIMIT 10001) AS capped) AS c) AS n;

-- dl_processed_elsewhere --
-- A publish of the same event other than the stream entry that died (processed after all).
SELECT id, event_id, stream, stream_entry_id, published_at FROM m10_recovery.replay_log
 WHERE (event_id = %(event_id)s OR idempotency_key = %(idempotency_key)s)
   AND (stream, stream_entry_id) IS DISTINCT FROM (%(source_stream)s, %(source_entry_id)s)
 ORDER BY id
 LIMIT 1;

-- dl_duplicate_of --
-- An already reconciled copy of the same dead letter (same event, same source entry): a
-- writer that crashed between its dead-letter XADD and its ACK wrote it twice.
SELECT id, reconcile_outcome, reconcile_attempts, replay_event_id
  FROM m10_recovery.dead_letter_archive
 WHERE lineage_key = %(lineage_key)s AND id <> %(id)s AND reconcile_outcome IS NOT NULL
   AND idempotency_key IS NOT DISTINCT FROM %(idempotency_key)s
   AND event_id IS NOT DISTINCT FROM %(event_id)s
   AND source_stream IS NOT DISTINCT FROM %(source_stream)s
   AND source_entry_id IS NOT DISTINCT FROM %(source_entry_id)s
 ORDER BY id
 LIMIT 1;

-- dl_replays_done --
-- Replays already made in this event's lineage (for the replay cap).
SELECT count(*) AS n FROM m10_recovery.dead_letter_archive
 WHERE lineage_key = %(lineage_key)s AND reconcile_outcome = 'replayed';

-- dl_enqueue_replay --
-- Re-enqueue a dead letter through the outbox (idempotent by its replay key).
SELECT m10_recovery.enqueue_outbox(%(event_type)s, %(payload)s, %(aggregate_type)s,
                                   %(aggregate_id)s, %(idempotency_key)s) AS id;

-- dl_record_outcome --
-- Record a reconcile decision on the archived dead letter (and why it is refused, if it is).
UPDATE m10_recovery.dead_letter_archive
   SET reconcile_outcome = %(outcome)s,
       reconcile_attempts = %(attempts)s,
       reconciled_at = now(),
       replay_event_id = %(replay_event_id)s,
       refusal = coalesce(%(refusal)s, refusal)
 WHERE id = %(id)s;

-- dl_select --
-- Archived dead letters for `m10 dl replay` / `m10 dl discard`, by id or by filter, in id
-- order after %(after)s (keyset pages), locked for the operator's transaction.  Payloads as in
-- dl_unreconciled.
SELECT
       id, dl_stream, dl_entry_id, source_stream, source_entry_id, event_id, idempotency_key,
       event_type, aggregate_type, aggregate_id, reason, delivery_count,
       dead_lettered_at, archived_at, reconcile_outcome, reconcile_attempts, reconciled_at,
       replay_event_id, lineage_key, refusal, discarded_by, discard_reason,
       coalesce(octet_length(payload), CASE WHEN fields->>'payload_bytes' ~ '^[0-9]{1,18}$'
                THEN (fields->>'payload_bytes')::bigint END) AS payload_bytes,
       CASE WHEN octet_length(payload) <= %(max_payload_bytes)s THEN payload END AS payload
  FROM m10_recovery.dead_letter_archive
 WHERE id > %(after)s
   AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
   AND (%(outcome)s::text IS NULL OR coalesce(reconcile_outcome, 'pending') = %(outcome)s)
   AND (%(event_type)s::text IS NULL OR event_type = %(event_type)s)
   AND (%(since_s)s::float8 IS NULL
        OR dead_lettered_at >= now() - make_interval(secs => %(since_s)s::float8))
   AND (%(since_ts)s::timestamptz IS NULL OR dead_lettered_at >= %(since_ts)s::timestamptz)
 ORDER BY id
 LIMIT %(limit)s
   FOR UPDATE;

-- dl_discard --
-- Settle one dead letter by hand: who, why, and when by the database clock.
UPDATE m10_recovery.dead_letter_archive
   SET reconcile_outcome = 'discarded', reconciled_at = now(),
       discarded_by = %(who)s, discard_reason = %(why)s
 WHERE id = %(id)s
RETURNING reconciled_at;

-- dl_list --
-- Archived dead letters, newest first, filtered by stream, reason and outcome.
SELECT id, dl_stream, dl_entry_id, source_stream, source_entry_id, event_id, idempotency_key,
       event_type, reason, delivery_count, dead_lettered_at, archived_at,
       coalesce(reconcile_outcome, 'pending') AS outcome, reconcile_attempts, reconciled_at,
       replay_event_id, refusal, discarded_by, discard_reason
  FROM m10_recovery.dead_letter_archive
 WHERE (%(stream)s::text IS NULL OR dl_stream = %(stream)s OR source_stream = %(stream)s)
   AND (%(reason)s::text IS NULL OR reason ILIKE '%%' || %(reason)s || '%%')
   AND (%(outcome)s::text IS NULL OR coalesce(reconcile_outcome, 'pending') = %(outcome)s)
 ORDER BY id DESC
 LIMIT %(limit)s;

-- matview_info --
-- Is NAME a materialized view, and does it have a unique index (needed for CONCURRENTLY)?
SELECT c.oid::regclass::text AS name, c.relkind = 'm' AS is_matview, c.relispopulated,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique
                  AND i.indpred IS NULL AND i.indexprs IS NULL) AS has_unique_index,
       (SELECT extract(epoch FROM clock_timestamp() - r.refreshed_at)::float8
          FROM m10_recovery.matview_refreshes r WHERE r.view_name = %(name)s)
           AS since_last_refresh_s
  FROM pg_class c
 WHERE c.oid = to_regclass(%(name)s);

-- matview_record_refresh --
-- Remember when a view was refreshed and how long it took.
INSERT INTO m10_recovery.matview_refreshes
       (view_name, refreshed_at, duration_ms, was_concurrent, run_id)
VALUES (%(name)s, clock_timestamp(), %(duration_ms)s, %(concurrently)s, %(run_id)s)
ON CONFLICT (view_name) DO UPDATE
   SET refreshed_at = EXCLUDED.refreshed_at, duration_ms = EXCLUDED.duration_ms,
       was_concurrent = EXCLUDED.was_concurrent, run_id = EXCLUDED.run_id;

-- retention_interrupted --
-- Runs of the same domain (policies, target prefix: the tables, or one host's files) that
-- died mid-way: we hold that domain's lease, so none of them is running.  Mark them failed.
UPDATE m10_recovery.retention_jobs
   SET status = 'failed', finished_at = now(),
       error = 'interrupted; its remaining rows are handled by run ' || %(run_id)s,
       duration_ms = (extract(epoch FROM now() - started_at) * 1000)::bigint
 WHERE status = 'running' AND run_id <> %(run_id)s
   AND policy = ANY(%(policies)s::text[]) AND starts_with(target, %(target_prefix)s)
RETURNING id, run_id, policy;

-- retention_start --
-- One retention_jobs row per policy per run.
INSERT INTO m10_recovery.retention_jobs (run_id, policy, target, cutoff, archive_location)
VALUES (%(run_id)s, %(policy)s, %(target)s, now() - make_interval(secs => %(max_age_s)s),
        %(archive_location)s)
RETURNING id, cutoff;

-- retention_progress --
-- Add one batch's counts (same transaction as the batch's DELETE).
UPDATE m10_recovery.retention_jobs
   SET rows_archived = rows_archived + %(archived)s, rows_deleted = rows_deleted + %(deleted)s
 WHERE id = %(id)s;

-- retention_finish --
-- Close a retention_jobs row.
UPDATE m10_recovery.retention_jobs
   SET status = %(status)s, error = %(error)s, finished_at = clock_timestamp(),
       duration_ms = (extract(epoch FROM clock_timestamp() - started_at) * 1000)::bigint
 WHERE id = %(id)s;

-- retention_history --
-- Recent retention_jobs rows, newest first.
SELECT id, run_id, policy, target, cutoff, status, rows_archived, rows_deleted,
       archive_location, error, started_at, finished_at, duration_ms
  FROM m10_recovery.retention_jobs
 WHERE %(policy)s::text IS NULL OR policy = %(policy)s
 ORDER BY id DESC
 LIMIT %(limit)s;

-- retention_columns --
-- A table's columns and their types, in order (written into the header of its archived chunks).
SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type
  FROM pg_catalog.pg_attribute AS a
 WHERE a.attrelid = %(table)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum;

-- retention_chunk_types --
-- The types an archived chunk's header names, as this database spells them (NULL: no such type),
-- in order (`m10 retention show` builds its temporary table from these, not from the file).
SELECT to_regtype(t)::text AS type
  FROM unnest(%(types)s::text[]) WITH ORDINALITY AS u(t, i)
 ORDER BY i;

-- retention_span_replay_log --
-- Upper id and row count of the next ids past a batch, eligible or not: the primary key alone
-- (an index-only scan); retention_copy_replay_log deletes only the eligible rows of the span.
SELECT max(id) AS upto, count(*) AS n FROM (
  SELECT id FROM m10_recovery.replay_log WHERE id > %(after)s ORDER BY id LIMIT %(limit)s) AS span;

-- retention_upto_replay_log --
-- Upper id of the next batch of replay_log rows past the cutoff (keyset: id > after).
SELECT max(id) AS upto FROM (
  SELECT id FROM m10_recovery.replay_log
   WHERE published_at < %(cutoff)s AND id > %(after)s
   ORDER BY id LIMIT %(limit)s) AS batch;

-- retention_copy_replay_log --
-- Delete that batch, streaming the deleted rows out as binary COPY.
COPY (DELETE FROM m10_recovery.replay_log AS t
       WHERE id > %(after)s AND id <= %(upto)s AND published_at < %(cutoff)s
   RETURNING t.*) TO STDOUT (FORMAT binary);

-- retention_span_dead_letter_archive --
-- Upper id and row count of the next ids past a batch, eligible or not: the primary key alone
-- (an index-only scan); retention_copy_dead_letter_archive deletes only the eligible rows of the span.
SELECT max(id) AS upto, count(*) AS n FROM (
  SELECT id FROM m10_recovery.dead_letter_archive WHERE id > %(after)s ORDER BY id LIMIT %(limit)s) AS span;

-- retention_upto_dead_letter_archive --
-- Upper id of the next batch of reconciled dead letters past the cutoff (keyset: id > after).
SELECT max(id) AS upto FROM (
  SELECT id FROM m10_recovery.dead_letter_archive
   WHERE reconcile_outcome IS NOT NULL AND reconciled_at < %(cutoff)s AND id > %(after)s
   ORDER BY id LIMIT %(limit)s) AS batch;

-- retention_copy_dead_letter_archive --
-- Delete that batch, streaming the deleted rows out as binary COPY.
COPY (DELETE FROM m10_recovery.dead_letter_archive AS t
       WHERE id > %(after)s AND id <= %(upto)s AND reconcile_outcome IS NOT NULL AND reconciled_at < %(cutoff)s
   RETURNING t.*) TO STDOUT (FORMAT binary);

-- retention_span_outbox --
-- Upper id and row count of the next ids past a batch, eligible or not: the primary key alone
-- (an index-only scan); retention_copy_outbox deletes only the eligible rows of the span.
SELECT max(id) AS upto, count(*) AS n FROM (
  SELECT id FROM m10_recovery.outbox WHERE id > %(after)s ORDER BY id LIMIT %(limit)s) AS span;

-- retention_upto_outbox --
-- Upper id of the next batch of published outbox rows past the cutoff (keyset: id > after).
SELECT max(id) AS upto FROM (
  SELECT id FROM m10_recovery.outbox
   WHERE status = 'published' AND published_at < %(cutoff)s AND id > %(after)s
   ORDER BY id LIMIT %(limit)s) AS batch;

-- retention_copy_outbox --
-- Delete that batch, streaming the deleted rows out as binary COPY.
COPY (DELETE FROM m10_recovery.outbox AS t
       WHERE id > %(after)s AND id <= %(upto)s AND status = 'published' AND published_at < %(cutoff)s
   RETURNING t.*) TO STDOUT (FORMAT binary);

-- retention_upto_outbox_dead_lettered --
-- Upper id of the next batch of dead-lettered outbox rows (archived in dead_letter_archive when
-- they were dead-lettered) past the cutoff: oldest first by outbox_dead_lettered_at_idx, so the
-- recent ones are never walked; every eligible row up to that id goes in the batch.
SELECT max(id) AS upto FROM (
  SELECT id FROM m10_recovery.outbox
   WHERE status = 'dead_lettered' AND coalesce(dead_lettered_at, created_at) < %(cutoff)s
     AND id > %(after)s
   ORDER BY coalesce(dead_lettered_at, created_at), id LIMIT %(limit)s) AS batch;

-- retention_copy_outbox_dead_lettered --
-- Delete that batch, streaming the deleted rows out as binary COPY.
COPY (DELETE FROM m10_recovery.outbox AS t
       WHERE id > %(after)s AND id <= %(upto)s AND status = 'dead_lettered'
         AND coalesce(dead_lettered_at, created_at) < %(cutoff)s
   RETURNING t.*) TO STDOUT (FORMAT binary);

-- retention_span_retention_jobs --
-- Upper id and row count of the next ids past a batch, eligible or not: the primary key alone
-- (an index-only scan); retention_copy_retention_jobs deletes only the eligible rows of the span.
SELECT max(id) AS upto, count(*) AS n FROM (
  SELECT id FROM m10_recovery.retention_jobs WHERE id > %(after)s ORDER BY id LIMIT %(limit)s) AS span;

-- retention_upto_retention_jobs --
-- Upper id of the next batch of finished retention_jobs rows past the cutoff (keyset: id > after).
SELECT max(id) AS upto FROM (
  SELECT id FROM m10_recovery.retention_jobs
   WHERE status <> 'running' AND started_at < %(cutoff)s AND id > %(after)s
   ORDER BY id LIMIT %(limit)s) AS batch;

-- retention_copy_retention_jobs --
-- Delete that batch, streaming the deleted rows out as binary COPY.
COPY (DELETE FROM m10_recovery.retention_jobs AS t
       WHERE id > %(after)s AND id <= %(upto)s AND status <> 'running' AND started_at < %(cutoff)s
   RETURNING t.*) TO STDOUT (FORMAT binary);

-- retention_span_job_runs --
-- Upper id and row count of the next ids past a batch, eligible or not: the primary key alone
-- (an index-only scan); retention_copy_job_runs deletes only the eligible rows of the span.
SELECT max(id) AS upto, count(*) AS n FROM (
  SELECT id FROM m10_recovery.job_runs WHERE id > %(after)s ORDER BY id LIMIT %(limit)s) AS span;

-- retention_upto_job_runs --
-- Upper id of the next batch of run history rows past the cutoff (keyset: id > after).
SELECT max(id) AS upto FROM (
  SELECT id FROM m10_recovery.job_runs
   WHERE started_at < %(cutoff)s AND id > %(after)s
   ORDER BY id LIMIT %(limit)s) AS batch;

-- retention_copy_job_runs --
-- Delete that batch, streaming the deleted rows out as binary COPY.
COPY (DELETE FROM m10_recovery.job_runs AS t
       WHERE id > %(after)s AND id <= %(upto)s AND started_at < %(cutoff)s
   RETURNING t.*) TO STDOUT (FORMAT binary);

-- retention_count_replay_log --
-- replay_log rows past the cutoff (for --dry-run).
SELECT count(*) AS n FROM m10_recovery.replay_log
 WHERE published_at < now() - make_interval(secs => %(max_age_s)s);

-- retention_count_dead_letter_archive --
-- Reconciled dead letters past the cutoff (for --dry-run).
SELECT count(*) AS n FROM m10_recovery.dead_letter_archive
 WHERE reconcile_outcome IS NOT NULL AND reconciled_at < now() - make_interval(secs => %(max_age_s)s);

-- retention_count_outbox --
-- Published outbox rows past the cutoff (for --dry-run).
SELECT count(*) AS n FROM m10_recovery.outbox
 WHERE status = 'published' AND published_at < now() - make_interval(secs => %(max_age_s)s);

-- retention_count_outbox_dead_lettered --
-- Dead-lettered outbox rows past the cutoff (for --dry-run).
SELECT count(*) AS n FROM m10_recovery.outbox
 WHERE status = 'dead_lettered'
   AND coalesce(dead_lettered_at, created_at) < now() - make_interval(secs => %(max_age_s)s);

-- retention_count_retention_jobs --
-- Finished retention_jobs rows past the cutoff (for --dry-run).
SELECT count(*) AS n FROM m10_recovery.retention_jobs
 WHERE status <> 'running' AND started_at < now() - make_interval(secs => %(max_age_s)s);

-- retention_count_job_runs --
-- Run history rows past the cutoff (for --dry-run).
SELECT count(*) AS n FROM m10_recovery.job_runs
 WHERE started_at < now() - make_interval(secs => %(max_age_s)s);
