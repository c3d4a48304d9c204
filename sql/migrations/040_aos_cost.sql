-- Cost snapshots (aos-cost-snapshot-hourly / -daily).  Schema aos_cost holds
-- the default source table (cost_records, written by the layer that records
-- costs) and the jobs' own tables.  The jobs run as members of m10_ops: they
-- may only SELECT the source and write their own tables.  Times are UTC; money
-- is numeric (exact), negative amounts are credits.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'aos_cost_source') THEN
        CREATE ROLE aos_cost_source NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- another database of this cluster migrated at the same moment
END
$$;

CREATE SCHEMA IF NOT EXISTS aos_cost;

-- The default source: one row per cost event.  Owned by aos_cost_source (grant
-- it to whatever writes costs), so the jobs' role cannot change it.
CREATE TABLE aos_cost.cost_records (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at  timestamptz NOT NULL,
    tenant_id    text        NOT NULL CHECK (tenant_id <> ''),
    category     text        NOT NULL CHECK (category <> ''),
    amount_usd   numeric     NOT NULL
);
CREATE INDEX cost_records_occurred_at_idx ON aos_cost.cost_records (occurred_at);

-- One row per (granularity, period, tenant, category): an upsert target, so a
-- rerun replaces a row and never adds to it.
CREATE TABLE aos_cost.cost_snapshots (
    granularity    text        NOT NULL CHECK (granularity IN ('hour', 'day')),
    period_start   timestamptz NOT NULL,
    tenant_id      text        NOT NULL,
    category       text        NOT NULL,
    amount_usd     numeric     NOT NULL,
    record_count   bigint      NOT NULL CHECK (record_count >= 0),
    taken_at       timestamptz NOT NULL DEFAULT now(),
    fencing_token  bigint,
    PRIMARY KEY (granularity, period_start, tenant_id, category),
    CHECK (period_start = date_trunc(granularity, period_start, 'UTC'))
);
CREATE INDEX cost_snapshots_tenant_idx
    ON aos_cost.cost_snapshots (tenant_id, granularity, period_start);

-- Which periods are done, also the empty ones: where backfill resumes, and
-- what the daily job checks before it sums a day's 24 hours.
CREATE TABLE aos_cost.snapshot_periods (
    granularity        text        NOT NULL CHECK (granularity IN ('hour', 'day')),
    period_start       timestamptz NOT NULL,
    rows_written       integer     NOT NULL,
    amount_usd         numeric     NOT NULL,
    record_count       bigint      NOT NULL,
    source_mismatches  integer     NOT NULL DEFAULT 0,
    taken_at           timestamptz NOT NULL DEFAULT now(),
    fencing_token      bigint,
    PRIMARY KEY (granularity, period_start),
    CHECK (period_start = date_trunc(granularity, period_start, 'UTC'))
);

-- The baseline a day was judged against: the N UTC days before it.
CREATE TABLE aos_cost.cost_baselines (
    day            date        NOT NULL,
    tenant_id      text        NOT NULL,
    category       text        NOT NULL,
    window_days    integer     NOT NULL,
    days_observed  integer     NOT NULL,
    mean_usd       numeric     NOT NULL,
    stddev_usd     numeric     NOT NULL,
    computed_at    timestamptz NOT NULL DEFAULT now(),
    fencing_token  bigint,
    PRIMARY KEY (day, tenant_id, category)
);

-- Days whose total exceeded mean + k*stddev and the minimum amount.
CREATE TABLE aos_cost.anomalies (
    day             date        NOT NULL,
    tenant_id       text        NOT NULL,
    category        text        NOT NULL,
    amount_usd      numeric     NOT NULL,
    mean_usd        numeric     NOT NULL,
    stddev_usd      numeric     NOT NULL,
    threshold_usd   numeric     NOT NULL,
    k               numeric     NOT NULL,
    min_amount_usd  numeric     NOT NULL,
    detected_at     timestamptz NOT NULL DEFAULT now(),
    fencing_token   bigint,
    PRIMARY KEY (day, tenant_id, category)
);
CREATE INDEX anomalies_tenant_idx ON aos_cost.anomalies (tenant_id, day);

ALTER SCHEMA aos_cost OWNER TO m10_ops;
ALTER TABLE aos_cost.cost_records OWNER TO aos_cost_source;
ALTER TABLE aos_cost.cost_snapshots OWNER TO m10_ops;
ALTER TABLE aos_cost.snapshot_periods OWNER TO m10_ops;
ALTER TABLE aos_cost.cost_baselines OWNER TO m10_ops;
ALTER TABLE aos_cost.anomalies OWNER TO m10_ops;

-- Read-only on the source, nothing for PUBLIC.
REVOKE ALL ON SCHEMA aos_cost FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA aos_cost FROM PUBLIC;
GRANT USAGE ON SCHEMA aos_cost TO aos_cost_source;
GRANT SELECT ON aos_cost.cost_records TO m10_ops;
