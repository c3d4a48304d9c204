"""aos-cost-snapshot-daily: sums of hourly, source check, baseline, anomalies, `m10 cost`."""

from __future__ import annotations

import json
import statistics
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

from tests.cost_support import (
    T0,
    Conn,
    D,
    H,
    add,
    periods,
    snapshots,
    summary,
    until,
    with_config,
)

HOURLY, DAILY = "aos-cost-snapshot-hourly", "aos-cost-snapshot-daily"


def test_daily_totals_equal_the_sum_of_hourly_and_are_checked_against_the_source(
    cli: Any, conn: Conn, env: dict[str, str], tmp_path: Path
) -> None:
    for day in range(3):
        for hour in range(24):
            at = T0 + day * D + hour * H + H / 7
            add(conn, at, "acme", "compute", Decimal("0.001") * (hour + 1) + Decimal("1.3"))
            add(conn, at, "acme", "credits", "-0.0333")
            if hour % 5 == 0:
                add(conn, at, "globex", "storage", Decimal(day + 1) / 3)
    cfg = with_config(
        env,
        tmp_path,
        backfill_max_hours=72,
        resnapshot_hours=0,
        backfill_max_days=5,
        resnapshot_days=0,
    )
    assert cli(HOURLY, "--until", until(T0 + 3 * D), env=cfg).returncode == 0
    daily = cli(DAILY, "--until", until(T0 + 3 * D), env=cfg)
    assert daily.returncode == 0, daily.stderr
    assert summary(daily)["days"] == ["2026-01-10", "2026-01-11", "2026-01-12"]
    assert summary(daily)["source_mismatches"] == 0, daily.stderr
    per_day = conn.execute("""
        SELECT d.period_start, d.tenant_id, d.category, d.amount_usd, d.record_count,
               (SELECT sum(h.amount_usd) FROM aos_cost.cost_snapshots h
                 WHERE h.granularity = 'hour' AND h.tenant_id = d.tenant_id
                   AND h.category = d.category AND h.period_start >= d.period_start
                   AND h.period_start < d.period_start + interval '1 day') AS hourly_sum,
               (SELECT sum(r.amount_usd) FROM aos_cost.cost_records r
                 WHERE r.tenant_id = d.tenant_id AND r.category = d.category
                   AND r.occurred_at >= d.period_start
                   AND r.occurred_at < d.period_start + interval '1 day') AS source_sum
          FROM aos_cost.cost_snapshots d WHERE d.granularity = 'day'""").fetchall()
    assert len(per_day) == 9
    for r in per_day:
        assert r["amount_usd"] == r["hourly_sum"] == r["source_sum"], r
    assert {(r["category"], r["record_count"]) for r in per_day} >= {
        ("compute", 24),
        ("credits", 24),
    }
    assert Decimal("-0.7992") in {r["amount_usd"] for r in per_day}  # 24 x -0.0333, exact

    # A record that arrives after the hourly re-snapshot window: reported, not absorbed.
    add(conn, T0 + D + 3 * H, "acme", "compute", "100")
    stale = cli(DAILY, "--until", until(T0 + 3 * D), "--resnapshot-days", "3", env=cfg)
    assert stale.returncode == 0, stale.stderr
    assert summary(stale)["source_mismatches"] == 1
    assert "the source now says" in stale.stderr
    day_rows = {(s[0], s[2]): s[3] for s in snapshots(conn, "day") if s[1] == "acme"}
    assert day_rows[(T0 + D, "compute")] == sum(
        (
            s[3]
            for s in snapshots(conn, "hour")
            if s[1:3] == ("acme", "compute") and T0 + D <= s[0] < T0 + 2 * D
        ),
        Decimal(0),
    )
    # The documented fix: re-snapshot the hours, then rebuild the days.
    assert (
        cli(HOURLY, "--until", until(T0 + 3 * D), "--resnapshot-hours", "72", env=cfg).returncode
        == 0
    )
    fixed = cli(DAILY, "--until", until(T0 + 3 * D), "--resnapshot-days", "3", env=cfg)
    assert summary(fixed)["source_mismatches"] == 0
    new = {(s[0], s[2]): s[3] for s in snapshots(conn, "day") if s[1] == "acme"}
    assert new[(T0 + D, "compute")] == day_rows[(T0 + D, "compute")] + 100


def test_a_day_with_missing_hours_is_not_built(
    cli: Any, conn: Conn, env: dict[str, str], tmp_path: Path
) -> None:
    add(conn, T0 + H / 2, "acme", "compute", "1")
    cfg = with_config(env, tmp_path, backfill_max_hours=48, resnapshot_hours=0)
    assert cli(HOURLY, "--until", until(T0 + D), env=cfg).returncode == 0
    conn.execute("DELETE FROM aos_cost.snapshot_periods WHERE period_start = %s", (T0 + 5 * H,))
    proc = cli(DAILY, "--until", until(T0 + D), env=cfg)
    assert proc.returncode == 0, proc.stderr  # yesterday: the hourly job may still be running
    assert summary(proc)["pending"] == ["2026-01-10"] and summary(proc)["days"] == ["2026-01-09"]
    assert "23 of 24 hours" in proc.stderr
    later = cli(DAILY, "--until", until(T0 + 2 * D), env=cfg)
    assert later.returncode == 1  # older than yesterday: the hourly job is really behind
    assert "hourly snapshots are missing" in later.stderr
    assert cli(HOURLY, "--until", until(T0 + 2 * D), env=cfg).returncode == 0
    assert cli(DAILY, "--until", until(T0 + 2 * D), env=cfg).returncode == 0
    assert periods(conn, "day") == [T0 - D, T0, T0 + D]


SERIES = {  # tenant, category -> eight daily totals; only acme/compute's last day is odd
    ("acme", "compute"): ["100", "102", "98", "101", "99", "100", "100", "400"],
    ("acme", "storage"): ["10", "10", "10", "10", "10", "10", "10", "30"],  # < min amount
    ("globex", "compute"): ["100", "140", "60", "100", "130", "70", "100", "160"],  # < k sd
}


def test_baseline_and_anomaly_on_a_constructed_series(
    cli: Any, conn: Conn, env: dict[str, str], tmp_path: Path
) -> None:
    for (tenant, category), amounts in SERIES.items():
        for day, amount in enumerate(amounts):
            add(conn, T0 + day * D + 12 * H, tenant, category, amount)
    cfg = with_config(
        env,
        tmp_path,
        backfill_max_hours=24 * 8,
        resnapshot_hours=0,
        baseline_days=7,
        baseline_min_days=3,
        anomaly_k=3,
        anomaly_min_amount_usd="50.00",
    )
    end = T0 + 8 * D
    assert cli(HOURLY, "--until", until(end), env=cfg).returncode == 0
    proc = cli(DAILY, "--until", until(end), env=cfg)
    assert proc.returncode == 0, proc.stderr
    assert summary(proc)["anomalies"] == 1

    rows = conn.execute("SELECT * FROM aos_cost.anomalies").fetchall()
    assert [(str(r["day"]), r["tenant_id"], r["category"], r["amount_usd"]) for r in rows] == [
        ("2026-01-17", "acme", "compute", Decimal("400"))
    ]
    history = [Decimal(a) for a in SERIES[("acme", "compute")][:7]]
    with localcontext() as c:
        c.prec = 28
        mean, stdev = statistics.mean(history), statistics.stdev(history)
    a = rows[0]
    assert a["mean_usd"] == mean
    assert abs(a["stddev_usd"] - stdev) < Decimal("1e-12")
    with localcontext() as c:
        c.prec = 200
        assert a["threshold_usd"] == a["mean_usd"] + 3 * a["stddev_usd"]
    baseline = conn.execute(
        "SELECT * FROM aos_cost.cost_baselines WHERE day = '2026-01-17' "
        "AND tenant_id = 'acme' AND category = 'compute'"
    ).fetchone()
    assert (baseline["days_observed"], baseline["window_days"]) == (7, 7)

    warnings = [json.loads(line) for line in proc.stderr.splitlines() if "cost anomaly" in line]
    assert len(warnings) == 1 and warnings[0]["level"] == "WARNING"
    assert "tenant acme category compute on 2026-01-17: 400 USD" in warnings[0]["message"]
    prom = (Path(env["M10_METRICS_DIR"]) / "m10_aos_cost_snapshot_daily.prom").read_text()
    assert (
        'aos_cost_anomaly_amount_usd{category="compute",day="2026-01-17",'
        'job="aos-cost-snapshot-daily",tenant="acme"} 400'
    ) in prom
    assert 'aos_cost_anomalies_latest_day{job="aos-cost-snapshot-daily"} 1' in prom

    # Rerunning changes nothing; the operator command shows it.
    again = cli(DAILY, "--until", until(end), "--resnapshot-days", "8", env=cfg)
    assert again.returncode == 0 and summary(again)["anomalies"] == 1
    assert conn.execute("SELECT count(*) AS n FROM aos_cost.anomalies").fetchone()["n"] == 1
    show = cli("m10", "cost", "show", "acme", "--days", "400", "--hours", "0")
    assert show.returncode == 0, show.stderr
    assert "anomalies (last 400 days):" in show.stdout and "2026-01-17  compute" in show.stdout
    shown = json.loads(cli("m10", "cost", "show", "acme", "--days", "400", "--json").stdout)
    assert [x["day"] for x in shown["anomalies"]] == ["2026-01-17"]
    assert len(shown["daily"]) == 16
    assert "no cost snapshots" in cli("m10", "cost", "show", "nobody").stdout
    status = json.loads(cli("m10", "cost", "status", "--json").stdout)
    assert (status["last_day"][:10], status["anomalies"]) == ("2026-01-17", 1)

    # A correcting credit arrives: the rebuilt day is no longer an anomaly.
    add(conn, end - D + 13 * H, "acme", "compute", "-300")
    assert cli(HOURLY, "--until", until(end), "--resnapshot-hours", "24", env=cfg).returncode == 0
    cleared = cli(DAILY, "--until", until(end), env=cfg)
    assert cleared.returncode == 0 and summary(cleared)["anomalies"] == 0
    assert conn.execute("SELECT count(*) AS n FROM aos_cost.anomalies").fetchone()["n"] == 0


def test_a_day_whose_source_rows_are_bad_is_skipped_and_the_others_are_built(
    cli: Any, conn: Conn, env: dict[str, str], tmp_path: Path
) -> None:
    for day in range(3):
        for hour in range(24):
            add(conn, T0 + day * D + hour * H + H / 7, "acme", "compute", "1")
    hourly_cfg = with_config(env, tmp_path, backfill_max_hours=72, resnapshot_hours=0)
    assert cli(HOURLY, "--until", until(T0 + 3 * D), env=hourly_cfg).returncode == 0
    # The whole-day read of the middle day (its source check) returns a NULL tenant.
    bad_middle_day = """
SELECT CASE WHEN %(period_start)s::timestamptz = '2026-01-11T00:00:00Z'
             AND %(period_end)s::timestamptz = '2026-01-12T00:00:00Z' THEN NULL
            ELSE tenant_id END AS tenant_id,
       category, sum(amount_usd) AS amount_usd, count(*) AS record_count
  FROM aos_cost.cost_records
 WHERE occurred_at >= %(period_start)s AND occurred_at < %(period_end)s
 GROUP BY 1, 2
"""
    cfg = with_config(
        env,
        tmp_path,
        "daily.toml",
        backfill_max_hours=72,
        resnapshot_hours=0,
        backfill_max_days=5,
        resnapshot_days=0,
        source_query=bad_middle_day,
    )
    daily = cli(DAILY, "--until", until(T0 + 3 * D), env=cfg)
    assert daily.returncode == 1, daily.stderr
    assert "1 day(s) refused" in daily.stderr and "Traceback" not in daily.stderr
    assert summary(daily)["days"] == ["2026-01-10", "2026-01-12"]
    assert periods(conn, "day") == [T0, T0 + 2 * D]
    prom = (Path(env["M10_METRICS_DIR"]) / "m10_aos_cost_snapshot_daily.prom").read_text()
    assert 'aos_cost_bad_periods{granularity="day",job="aos-cost-snapshot-daily"} 1' in prom

    fixed = with_config(
        env,
        tmp_path,
        "fixed.toml",
        backfill_max_hours=72,
        resnapshot_hours=0,
        backfill_max_days=5,
        resnapshot_days=0,
    )
    again = cli(DAILY, "--until", until(T0 + 3 * D), env=fixed)
    assert again.returncode == 0, again.stderr
    assert periods(conn, "day") == [T0, T0 + D, T0 + 2 * D]
