-- `m10 status` (and `m10 cost status`): read-only, each query bounded by an index so the
-- whole screen stays under a second on production-size tables.  Times by the database clock.

-- status_session --
-- This session only reads, and no statement of it runs longer than %(ms)s milliseconds.
SELECT set_config('default_transaction_read_only', 'on', false),
       set_config('statement_timeout', %(ms)s, false);

-- status_postgres --
-- The engine behind M10_DATABASE_URL: role, WAL timeline (a promotion moves it on), server
-- address (which host of a multi-host DSN answered), version, uptime.
SELECT CASE WHEN pg_is_in_recovery() THEN 'standby' ELSE 'primary' END AS role,
       coalesce(m10_recovery.current_timeline(),
                (SELECT received_tli FROM pg_stat_wal_receiver)) AS timeline,
       coalesce(host(inet_server_addr()) || ':' || inet_server_port(), 'local socket') AS server,
       current_setting('server_version') AS version,
       extract(epoch FROM clock_timestamp() - pg_postmaster_start_time())::float8 AS up_s;

-- status_leases --
-- Every lease row (the table holds one row per held lock: small) with ages and its TTL.
SELECT lock_name, holder_id, fencing_token,
       extract(epoch FROM clock_timestamp() - acquired_at)::float8 AS age_s,
       extract(epoch FROM expires_at - clock_timestamp())::float8 AS expires_in_s,
       extract(epoch FROM expires_at - coalesce(extended_at, acquired_at))::float8 AS ttl_s
  FROM m10_recovery.distributed_locks
 ORDER BY lock_name;

-- status_outbox --
-- Pending and retrying events, the oldest pending age, aggregates held back by a retrying
-- event, dead-lettered events (partial indexes on status), and the age of the last publish.
-- Counts are exact up to 10,000, then the matching partial index's row count (as
-- outbox_backlog; held-back aggregates stop at 10,001): a million-event backlog costs no
-- full count.
SELECT (SELECT CASE WHEN n <= 10000 THEN n ELSE greatest(n, (SELECT reltuples::bigint
          FROM pg_class WHERE oid = 'm10_recovery.outbox_pending_idx'::regclass)) END
          FROM (SELECT count(*) AS n FROM (SELECT FROM m10_recovery.outbox
                 WHERE status = 'pending' LIMIT 10001) AS capped) AS c) AS pending,
       (SELECT CASE WHEN n <= 10000 THEN n ELSE greatest(n, (SELECT reltuples::bigint
          FROM pg_class WHERE oid = 'm10_recovery.outbox_retrying_idx'::regclass)) END
          FROM (SELECT count(*) AS n FROM (SELECT FROM m10_recovery.outbox
                 WHERE status = 'pending' AND attempts > 0 LIMIT 10001) AS capped) AS c) AS retrying,
       (SELECT extract(epoch FROM clock_timestamp() - created_at)::float8
          FROM m10_recovery.outbox WHERE status = 'pending'
         ORDER BY id LIMIT 1) AS oldest_pending_age_s,
       (SELECT count(*) FROM (
            SELECT DISTINCT coalesce(aggregate_type, ''), aggregate_id
              FROM m10_recovery.outbox
             WHERE status = 'pending' AND attempts > 0 AND next_attempt_at > now()
               AND aggregate_id IS NOT NULL
             LIMIT 10001) held) AS held_back_aggregates,
       (SELECT CASE WHEN n <= 10000 THEN n ELSE greatest(n, (SELECT reltuples::bigint
          FROM pg_class WHERE oid = 'm10_recovery.outbox_dead_lettered_idx'::regclass)) END
          FROM (SELECT count(*) AS n FROM (SELECT FROM m10_recovery.outbox
                 WHERE status = 'dead_lettered' LIMIT 10001) AS capped) AS c) AS dead_lettered,
       (SELECT extract(epoch FROM clock_timestamp() - max(published_at))::float8
          FROM m10_recovery.replay_log) AS last_publish_age_s;

-- status_dead_letters --
-- Archived dead letters awaiting reconcile (and the oldest's age), abandoned ones nobody has
-- replayed or discarded yet (a discarded one is outcome 'discarded'), and the outcomes reconciled in the last 24 hours (partial indexes; the
-- first three exact up to 10,000, then the partial index's row count).
SELECT (SELECT CASE WHEN n <= 10000 THEN n ELSE greatest(n, (SELECT reltuples::bigint
          FROM pg_class WHERE oid = 'm10_recovery.dead_letter_archive_unreconciled_idx'::regclass)) END
          FROM (SELECT count(*) AS n FROM (SELECT FROM m10_recovery.dead_letter_archive
                 WHERE reconcile_outcome IS NULL LIMIT 10001) AS capped) AS c) AS pending,
       (SELECT extract(epoch FROM clock_timestamp() - archived_at)::float8
          FROM m10_recovery.dead_letter_archive WHERE reconcile_outcome IS NULL
         ORDER BY id LIMIT 1) AS oldest_pending_age_s,
       (SELECT CASE WHEN n <= 10000 THEN n ELSE greatest(n, (SELECT reltuples::bigint
          FROM pg_class WHERE oid = 'm10_recovery.dead_letter_archive_abandoned_idx'::regclass)) END
          FROM (SELECT count(*) AS n FROM (SELECT FROM m10_recovery.dead_letter_archive
                 WHERE reconcile_outcome = 'abandoned' LIMIT 10001) AS capped) AS c) AS abandoned,
       (SELECT min(id) FROM m10_recovery.dead_letter_archive
         WHERE reconcile_outcome = 'abandoned') AS first_abandoned_id,
       (SELECT count(*) FROM m10_recovery.dead_letter_archive
         WHERE reconcile_outcome IS NOT NULL AND reconcile_outcome = 'already_processed'
           AND reconciled_at >= now() - interval '24 hours') AS already_processed_24h,
       (SELECT count(*) FROM m10_recovery.dead_letter_archive
         WHERE reconcile_outcome IS NOT NULL AND reconcile_outcome = 'replayed'
           AND reconciled_at >= now() - interval '24 hours') AS replayed_24h,
       (SELECT count(*) FROM m10_recovery.dead_letter_archive
         WHERE reconcile_outcome IS NOT NULL AND reconcile_outcome = 'discarded'
           AND reconciled_at >= now() - interval '24 hours') AS discarded_24h;

-- status_cost_hours --
-- Hourly cost periods missing in the backfill window (whole hours that ended before
-- now - grace, from the first period ever snapshotted), the first missing one and the
-- newest done; each probe is a primary-key lookup, so this is bounded by the window.
WITH history AS (
    SELECT min(period_start) AS first_ever, max(period_start) AS last_done
      FROM aos_cost.snapshot_periods WHERE granularity = 'hour'
), bounds AS (
    SELECT CASE WHEN first_ever IS NOT NULL THEN greatest(
               first_ever,
               date_trunc('hour', now(), 'UTC') - make_interval(hours => %(window_hours)s))
           END AS first,
           date_trunc('hour', now() - make_interval(secs => %(grace_s)s), 'UTC')
               - interval '1 hour' AS last
      FROM history
), missing AS (
    SELECT h
      FROM bounds b, generate_series(b.first, b.last, interval '1 hour') AS h
     WHERE NOT EXISTS (SELECT 1 FROM aos_cost.snapshot_periods p
                        WHERE p.granularity = 'hour' AND p.period_start = h)
)
SELECT (SELECT count(*) FROM missing)::int AS hours_missing,
       (SELECT min(h) FROM missing) AS first_missing_hour,
       (SELECT max(h) FROM missing) AS last_missing_hour,
       (SELECT last_done FROM history) AS last_hour,
       (SELECT first_ever FROM history) IS NULL AS never_ran;
