"""Cost snapshots: nine days of generated records, hourly backfill, daily baseline,
one visible anomaly, an idempotent rerun, a second host (75), a bad source query (78)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devenv.demo import Demo

ORDER = 60
CONFIG = """
[cost]
backfill_max_hours = 240
baseline_days = 7
baseline_min_days = 3
anomaly_k = 3
anomaly_min_amount_usd = "50.00"
"""

# One record per hour per tenant/category from nine days ago until now; daily
# totals swing a few percent; globex/compute spikes yesterday 10:00-15:59 UTC.
RECORDS = """
INSERT INTO aos_cost.cost_records (occurred_at, tenant_id, category, amount_usd)
SELECT h + interval '17 minutes', t.tenant, t.category,
       round((t.base * (1 + 0.08 * sin(extract(epoch FROM h)::bigint / 86400 * 2.1))
                     * (1 + 0.05 * sin(extract(epoch FROM h)::bigint / 3600 * 0.7)))::numeric, 4)
  FROM generate_series(date_trunc('day', now(), 'UTC') - interval '9 days',
                       now() - interval '1 hour', interval '1 hour') AS h,
       (VALUES ('acme', 'compute', 4.0), ('acme', 'storage', 0.5),
               ('globex', 'compute', 3.0), ('globex', 'network', 0.8),
               ('initech', 'compute', 1.2)) AS t(tenant, category, base)
 WHERE h + interval '17 minutes' < now();
INSERT INTO aos_cost.cost_records (occurred_at, tenant_id, category, amount_usd)
SELECT h + interval '40 minutes', 'globex', 'compute', 45.00
  FROM generate_series(date_trunc('day', now(), 'UTC') - interval '14 hours',
                       date_trunc('day', now(), 'UTC') - interval '9 hours',
                       interval '1 hour') AS h;
INSERT INTO aos_cost.cost_records (occurred_at, tenant_id, category, amount_usd)
VALUES (date_trunc('day', now(), 'UTC') - interval '15 hours', 'acme', 'compute', -5.00);
"""

WRONG_COLUMNS = """
[cost]
source_query = '''SELECT tenant_id, sum(amount_usd)::float8 AS amount
  FROM aos_cost.cost_records
 WHERE occurred_at >= %(period_start)s AND occurred_at < %(period_end)s GROUP BY 1'''
"""


def run(d: Demo) -> None:
    d.say(
        "cost: nine days of hourly cost records for five tenant/categories, a credit "
        "(negative amount) and a spike for globex/compute yesterday"
    )
    d.sql(RECORDS)
    d.show(
        str(
            d.sql("SELECT count(*) AS records, sum(amount_usd) AS usd FROM aos_cost.cost_records")[
                0
            ]
        )
    )
    d.say("what the hourly job would do (dry run: no lease, nothing written)")
    d.run("aos-cost-snapshot-hourly", "--dry-run")
    d.say("hourly snapshot: backfills every complete hour (capped at backfill_max_hours)")
    d.run("aos-cost-snapshot-hourly")
    d.say("daily snapshot from the hourly ones, 7-day baseline, anomaly flags")
    step = d.run("aos-cost-snapshot-daily")
    for line in step.stderr.splitlines():
        if "cost anomaly" in line:
            d.show("journal: " + json.loads(line)["message"])
    d.run("m10", "cost", "show", "globex", "--days", "3", "--hours", "0")
    d.say("daily totals equal the sum of hourly; rerunning changes nothing")
    check = """
        SELECT count(*) AS day_rows,
               count(*) FILTER (WHERE d.amount_usd <> (
                   SELECT sum(h.amount_usd) FROM aos_cost.cost_snapshots h
                    WHERE h.granularity = 'hour' AND h.tenant_id = d.tenant_id
                      AND h.category = d.category AND h.period_start >= d.period_start
                      AND h.period_start < d.period_start + interval '1 day')) AS differ,
               (SELECT count(*) FROM aos_cost.cost_snapshots) AS all_rows,
               (SELECT sum(amount_usd) FROM aos_cost.cost_snapshots
                 WHERE granularity = 'hour') AS hourly_usd
          FROM aos_cost.cost_snapshots d WHERE d.granularity = 'day'"""
    d.show("before: " + str(d.sql(check)[0]))
    d.run("aos-cost-snapshot-hourly")
    d.run("aos-cost-snapshot-daily")
    d.show("after:  " + str(d.sql(check)[0]))
    d.say("another host is running the hourly job: this one skips with exit 75")
    d.sql("SELECT m10_recovery.acquire_lock('aos:cost_snapshot_hourly', 'other-host:4242:demo', 2)")
    d.run("aos-cost-snapshot-hourly", expect=75)
    d.say("a source query with the wrong columns: exit 78 naming them, nothing written")
    bad = d.stack.base / "cost-wrong-columns.toml"
    bad.write_text(WRONG_COLUMNS)
    d.run("aos-cost-snapshot-daily", "--config", str(bad), expect=78)
