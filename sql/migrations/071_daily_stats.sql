-- Daily stats days, computed once for the cluster.
--
-- Several hosts run m10-daily-stats.  The day's figures are computed from the
-- database by whichever host holds the cluster lease m10:daily_stats and stored
-- here (fenced by that lease; a day is never recomputed, so every host exports
-- the same figures); each host then writes its own m10_stats_YYYY-MM.csv from
-- this table.  A day is computed only while the rows it counts are all still
-- retained: once the outbox's retention has passed it, it can only come from
-- here.

CREATE TABLE m10_recovery.daily_stats (
    day                     date        PRIMARY KEY,
    timezone                text        NOT NULL,
    outbox_enqueued         bigint,
    outbox_published        bigint,
    publish_latency_p50_ms  numeric,
    publish_latency_p95_ms  numeric,
    dead_lettered           bigint,
    dl_reconciled           bigint,
    retention_rows_deleted  bigint,
    locks_reclaimed         bigint,
    synthetic_sent          bigint,
    synthetic_arrived       bigint,
    computed_at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    host                    text        NOT NULL,
    fencing_token           bigint      NOT NULL
);
ALTER TABLE m10_recovery.daily_stats OWNER TO m10_ops;
