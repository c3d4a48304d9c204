-- Cost snapshot queries (aos-cost-snapshot-hourly / -daily, `m10 cost`).

-- cost_source_default --
-- The default source query: one row per tenant/category for [period_start, period_end).
SELECT tenant_id, category, sum(amount_usd) AS amount_usd, count(*) AS record_count
  FROM aos_cost.cost_records
 WHERE occurred_at >= %(period_start)s AND occurred_at < %(period_end)s
 GROUP BY tenant_id, category;

-- cost_first_period --
-- Start of the earliest snapshotted period of a granularity (NULL: none yet).
SELECT min(period_start) AS first FROM aos_cost.snapshot_periods
 WHERE granularity = %(granularity)s;

-- cost_done_periods --
-- Snapshotted periods of a granularity in [since, end).
SELECT period_start FROM aos_cost.snapshot_periods
 WHERE granularity = %(granularity)s AND period_start >= %(since)s AND period_start < %(end)s;

-- cost_history --
-- The first period ever snapshotted and how many are done before `since`.
SELECT min(period_start) AS first,
       count(*) FILTER (WHERE period_start < %(since)s)::int AS done_before
  FROM aos_cost.snapshot_periods
 WHERE granularity = %(granularity)s;

-- cost_upsert_snapshots --
-- Write one period's rows; a rerun replaces values, never adds to them.
INSERT INTO aos_cost.cost_snapshots AS s
       (granularity, period_start, tenant_id, category, amount_usd, record_count,
        fencing_token)
SELECT %(granularity)s, %(period_start)s, t, c, a, n, %(token)s
  FROM unnest(%(tenants)s::text[], %(categories)s::text[], %(amounts)s::numeric[],
              %(counts)s::bigint[]) AS u(t, c, a, n)
ON CONFLICT (granularity, period_start, tenant_id, category) DO UPDATE
   SET amount_usd = excluded.amount_usd,
       record_count = excluded.record_count,
       taken_at = now(),
       fencing_token = excluded.fencing_token;

-- cost_delete_stale_snapshots --
-- Drop a period's rows whose tenant/category the source no longer returns.
DELETE FROM aos_cost.cost_snapshots
 WHERE granularity = %(granularity)s AND period_start = %(period_start)s
   AND (tenant_id, category) NOT IN (
       SELECT * FROM unnest(%(tenants)s::text[], %(categories)s::text[]));

-- cost_upsert_period --
-- Mark a period done (also an empty one), with its totals.
INSERT INTO aos_cost.snapshot_periods AS p
       (granularity, period_start, rows_written, amount_usd, record_count,
        source_mismatches, fencing_token)
VALUES (%(granularity)s, %(period_start)s, %(rows)s, %(amount)s, %(records)s,
        %(mismatches)s, %(token)s)
ON CONFLICT (granularity, period_start) DO UPDATE
   SET rows_written = excluded.rows_written,
       amount_usd = excluded.amount_usd,
       record_count = excluded.record_count,
       source_mismatches = excluded.source_mismatches,
       taken_at = now(),
       fencing_token = excluded.fencing_token;

-- cost_hours_done --
-- How many of a day's hourly periods are snapshotted.
SELECT count(*) AS hours FROM aos_cost.snapshot_periods
 WHERE granularity = 'hour'
   AND period_start >= %(day_start)s AND period_start < %(day_end)s;

-- cost_day_from_hours --
-- A day's totals per tenant/category: the sum of its hourly snapshots.
SELECT tenant_id, category, sum(amount_usd) AS amount_usd,
       sum(record_count)::bigint AS record_count
  FROM aos_cost.cost_snapshots
 WHERE granularity = 'hour'
   AND period_start >= %(day_start)s AND period_start < %(day_end)s
 GROUP BY tenant_id, category
 ORDER BY tenant_id, category;

-- cost_baseline --
-- Mean and sample stddev per tenant/category over the snapshotted days in
-- [window_start, day); a day without a row for a key counts as 0.
WITH days AS (
    SELECT period_start FROM aos_cost.snapshot_periods
     WHERE granularity = 'day'
       AND period_start >= %(window_start)s AND period_start < %(day_start)s
), keys AS (
    SELECT DISTINCT tenant_id, category FROM aos_cost.cost_snapshots
     WHERE granularity = 'day'
       AND period_start >= %(window_start)s AND period_start <= %(day_start)s
), series AS (
    SELECT k.tenant_id, k.category, coalesce(s.amount_usd, 0) AS amount_usd
      FROM keys k CROSS JOIN days d
      LEFT JOIN aos_cost.cost_snapshots s
        ON s.granularity = 'day' AND s.period_start = d.period_start
       AND s.tenant_id = k.tenant_id AND s.category = k.category
)
SELECT k.tenant_id, k.category, count(s.amount_usd)::int AS days_observed,
       coalesce(avg(s.amount_usd), 0) AS mean_usd,
       coalesce(stddev_samp(s.amount_usd), 0) AS stddev_usd
  FROM keys k
  LEFT JOIN series s ON s.tenant_id = k.tenant_id AND s.category = k.category
 GROUP BY k.tenant_id, k.category
 ORDER BY k.tenant_id, k.category;

-- cost_upsert_baseline --
-- The baseline a day was judged against.
INSERT INTO aos_cost.cost_baselines AS b
       (day, tenant_id, category, window_days, days_observed, mean_usd, stddev_usd,
        fencing_token)
VALUES (%(day)s, %(tenant_id)s, %(category)s, %(window_days)s, %(days_observed)s,
        %(mean_usd)s, %(stddev_usd)s, %(token)s)
ON CONFLICT (day, tenant_id, category) DO UPDATE
   SET window_days = excluded.window_days,
       days_observed = excluded.days_observed,
       mean_usd = excluded.mean_usd,
       stddev_usd = excluded.stddev_usd,
       computed_at = now(),
       fencing_token = excluded.fencing_token;

-- cost_delete_stale_baselines --
-- Drop a day's baselines for keys that no longer have any data.
DELETE FROM aos_cost.cost_baselines
 WHERE day = %(day)s
   AND (tenant_id, category) NOT IN (
       SELECT * FROM unnest(%(tenants)s::text[], %(categories)s::text[]));

-- cost_upsert_anomaly --
-- Flag (or re-flag, with fresh figures) one day's anomaly.
INSERT INTO aos_cost.anomalies AS a
       (day, tenant_id, category, amount_usd, mean_usd, stddev_usd, threshold_usd, k,
        min_amount_usd, fencing_token)
VALUES (%(day)s, %(tenant_id)s, %(category)s, %(amount_usd)s, %(mean_usd)s, %(stddev_usd)s,
        %(threshold_usd)s, %(k)s, %(min_amount_usd)s, %(token)s)
ON CONFLICT (day, tenant_id, category) DO UPDATE
   SET amount_usd = excluded.amount_usd,
       mean_usd = excluded.mean_usd,
       stddev_usd = excluded.stddev_usd,
       threshold_usd = excluded.threshold_usd,
       k = excluded.k,
       min_amount_usd = excluded.min_amount_usd,
       detected_at = now(),
       fencing_token = excluded.fencing_token;

-- cost_delete_cleared_anomalies --
-- A rebuilt day keeps only the anomalies it still has.
DELETE FROM aos_cost.anomalies
 WHERE day = %(day)s
   AND (tenant_id, category) NOT IN (
       SELECT * FROM unnest(%(tenants)s::text[], %(categories)s::text[]));

-- cost_anomalies_on_day --
-- Anomalies flagged for one day (the metric for the latest complete day).
SELECT count(*)::int AS anomalies FROM aos_cost.anomalies WHERE day = %(day)s;

-- cost_show_days --
-- A tenant's daily snapshots, newest first.
SELECT (period_start AT TIME ZONE 'UTC')::date AS day, category, amount_usd, record_count
  FROM aos_cost.cost_snapshots
 WHERE granularity = 'day' AND tenant_id = %(tenant)s AND period_start >= %(since)s
 ORDER BY period_start DESC, category;

-- cost_show_baselines --
-- A tenant's latest baseline per category.
SELECT DISTINCT ON (category) day, category, window_days, days_observed, mean_usd, stddev_usd
  FROM aos_cost.cost_baselines
 WHERE tenant_id = %(tenant)s
 ORDER BY category, day DESC;

-- cost_show_anomalies --
-- A tenant's anomalies, newest first.
SELECT day, category, amount_usd, mean_usd, stddev_usd, threshold_usd, detected_at
  FROM aos_cost.anomalies
 WHERE tenant_id = %(tenant)s AND day >= %(since)s::date
 ORDER BY day DESC, category;

-- cost_show_hours --
-- A tenant's hourly snapshots in the last hours, newest first.
SELECT period_start, category, amount_usd, record_count
  FROM aos_cost.cost_snapshots
 WHERE granularity = 'hour' AND tenant_id = %(tenant)s AND period_start >= %(since)s
 ORDER BY period_start DESC, category;

-- cost_status --
-- Progress of both jobs: latest periods done and anomalies.
SELECT (SELECT max(period_start) FROM aos_cost.snapshot_periods
         WHERE granularity = 'hour') AS last_hour,
       (SELECT max(period_start) FROM aos_cost.snapshot_periods
         WHERE granularity = 'day') AS last_day,
       (SELECT count(*) FROM aos_cost.anomalies) AS anomalies,
       (SELECT max(day) FROM aos_cost.anomalies) AS last_anomaly_day;
