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
