-- Canary probe queries (m10-canary).  Run inside a read-only transaction with a
-- statement_timeout set by canary_statement_timeout.

-- canary_statement_timeout --
-- Bound this probe's statements (milliseconds, text); local to the probe's transaction.
SELECT set_config('statement_timeout', %(ms)s, true);

-- canary_outbox_backlog --
-- Pending outbox events and the age of the oldest one (0 when none), by the database clock.
-- (Oldest = first by id, read from outbox_pending_idx: no walk over published rows.)
-- (Pending: exact up to 10,000, then outbox_pending_idx's row count; see outbox_backlog.)
SELECT (SELECT CASE WHEN n <= 10000 THEN n ELSE greatest(n, (SELECT reltuples::bigint
                 FROM pg_class WHERE oid = 'm10_recovery.outbox_pending_idx'::regclass)) END
                 FROM (SELECT count(*) AS n FROM (SELECT FROM m10_recovery.outbox
                        WHERE status = 'pending' LIMIT 10001) AS capped) AS c)::float8 AS pending,
       coalesce((SELECT extract(epoch FROM clock_timestamp() - created_at)
                   FROM m10_recovery.outbox WHERE status = 'pending'
                  ORDER BY id LIMIT 1), 0)::float8 AS oldest_age_s;

-- canary_dead_letters --
-- Dead letters archived within the last window_s seconds (now(), not clock_timestamp(): a
-- volatile bound cannot use dead_letter_archive_dead_lettered_at_idx).
SELECT count(*)::float8 AS dead_letters
  FROM m10_recovery.dead_letter_archive
 WHERE dead_lettered_at >= now() - make_interval(secs => %(window_s)s);
