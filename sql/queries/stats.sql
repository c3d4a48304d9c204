-- Daily stats queries (m10-daily-stats).  One day = [%(lo)s, %(hi)s), bounds
-- computed in the configured time zone by the job.  Aggregated here: no row
-- ever reaches Python.

-- daily_stats --
-- Every figure of one day's CSV row (locks_reclaimed has no history table: NULL).
WITH enq AS (
    SELECT count(*) AS enqueued,
           count(*) FILTER (WHERE event_type = 'm10.synthetic') AS synthetic_sent,
           count(*) FILTER (WHERE event_type = 'm10.synthetic'
                              AND status = 'published') AS synthetic_arrived
      FROM m10_recovery.outbox
     WHERE created_at >= %(lo)s AND created_at < %(hi)s
), pub AS (
    SELECT count(*) AS published,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY lat) AS p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY lat) AS p95
      FROM (SELECT extract(epoch FROM published_at - created_at) * 1000 AS lat
              FROM m10_recovery.outbox
             WHERE status = 'published'
               AND published_at >= %(lo)s AND published_at < %(hi)s) p
), dl AS (
    SELECT count(*) AS dead_lettered FROM m10_recovery.dead_letter_archive
     WHERE dead_lettered_at >= %(lo)s AND dead_lettered_at < %(hi)s
), rec AS (
    SELECT count(*) AS reconciled FROM m10_recovery.dead_letter_archive
     WHERE reconciled_at >= %(lo)s AND reconciled_at < %(hi)s
       AND reconcile_outcome IS NOT NULL
), ret AS (
    SELECT coalesce(sum(rows_deleted), 0)::bigint AS rows_deleted
      FROM m10_recovery.retention_jobs
     WHERE finished_at >= %(lo)s AND finished_at < %(hi)s AND status = 'succeeded'
)
SELECT enq.enqueued AS outbox_enqueued, pub.published AS outbox_published,
       round(pub.p50::numeric, 1) AS publish_latency_p50_ms,
       round(pub.p95::numeric, 1) AS publish_latency_p95_ms,
       dl.dead_lettered, rec.reconciled AS dl_reconciled,
       ret.rows_deleted AS retention_rows_deleted, NULL::bigint AS locks_reclaimed,
       enq.synthetic_sent, enq.synthetic_arrived
  FROM enq, pub, dl, rec, ret;

-- stats_retained_since --
-- Rows older than this may have been deleted by retention from a table the stats count
-- (NULL: nothing deleted yet).  By target, so every policy on those tables counts.
SELECT max(cutoff) AS since
  FROM m10_recovery.retention_jobs
 WHERE target IN ('m10_recovery.outbox', 'm10_recovery.dead_letter_archive',
                  'm10_recovery.retention_jobs');

-- stats_last_day --
-- The newest computed day (NULL: none yet).
SELECT max(day) AS last FROM m10_recovery.daily_stats;

-- stats_days_between --
-- Which days of [first, last] are computed already.
SELECT day FROM m10_recovery.daily_stats WHERE day BETWEEN %(first)s AND %(last)s;

-- stats_store_day --
-- Store one computed day (fenced by the caller); a day already there is kept as it is.
INSERT INTO m10_recovery.daily_stats
       (day, timezone, host, fencing_token, outbox_enqueued, outbox_published,
        publish_latency_p50_ms, publish_latency_p95_ms, dead_lettered, dl_reconciled,
        retention_rows_deleted, locks_reclaimed, synthetic_sent, synthetic_arrived)
VALUES (%(day)s, %(timezone)s, %(host)s, %(token)s, %(outbox_enqueued)s, %(outbox_published)s,
        %(publish_latency_p50_ms)s, %(publish_latency_p95_ms)s, %(dead_lettered)s,
        %(dl_reconciled)s, %(retention_rows_deleted)s, %(locks_reclaimed)s,
        %(synthetic_sent)s, %(synthetic_arrived)s)
ON CONFLICT (day) DO NOTHING;

-- stats_rows_since --
-- Every computed day from a date on, in CSV column order, for the host-local export.
SELECT day, outbox_enqueued, outbox_published, publish_latency_p50_ms, publish_latency_p95_ms,
       dead_lettered, dl_reconciled, retention_rows_deleted, locks_reclaimed, synthetic_sent,
       synthetic_arrived
  FROM m10_recovery.daily_stats
 WHERE day >= %(first)s AND day <= %(last)s
 ORDER BY day;
