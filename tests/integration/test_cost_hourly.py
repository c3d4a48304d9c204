"""aos-cost-snapshot-hourly against real PostgreSQL, run as systemd would (processes)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.cost_support import (
    GATE_FUNCTION,
    GATED_QUERY,
    T0,
    Conn,
    H,
    add,
    error_lines,
    periods,
    snapshots,
    summary,
    until,
    with_config,
)

HOURLY = "aos-cost-snapshot-hourly"


def test_backfill_after_a_gap_then_cap_then_raised_cap_fills_the_hole(
    cli: Any, conn: Conn, env: dict[str, str], tmp_path: Path
) -> None:
    add(conn, T0 + 10 * H / 60, "acme", "compute", "1.10")
    add(conn, T0 + 1.5 * H, "acme", "compute", "2.20")
    add(conn, T0 + 5 * H + H / 12, "globex", "storage", "3.333333")
    add(conn, T0 + 30 * H, "acme", "compute", "-0.40")  # a credit
    capped = with_config(env, tmp_path, backfill_max_hours=24, resnapshot_hours=0)

    first = cli(HOURLY, "--until", until(T0 + 2 * H + 59 * H / 60 / 60), env=capped)
    assert first.returncode == 0, first.stderr
    assert summary(first)["hours"] == 24  # first run: the whole cap
    assert periods(conn, "hour") == [T0 - 22 * H + i * H for i in range(24)]
    assert snapshots(conn, "hour") == [
        (T0, "acme", "compute", Decimal("1.10"), 1),
        (T0 + H, "acme", "compute", Decimal("2.20"), 1),
    ]

    # "Downtime" until T0+8h: the six missing hours are caught up, oldest first.
    caught_up = cli(HOURLY, "--until", until(T0 + 8 * H), env=capped)
    assert caught_up.returncode == 0, caught_up.stderr
    assert (summary(caught_up)["hours"], summary(caught_up)["first"]) == (6, "2026-01-10T02:00:00Z")
    assert periods(conn, "hour")[-1] == T0 + 7 * H and len(periods(conn, "hour")) == 30
    assert (T0 + 5 * H, "globex", "storage", Decimal("3.333333"), 1) in snapshots(conn, "hour")

    # A longer outage than the cap: only the last 24 hours; the older hole is reported.
    # A capped backfill is degraded, never a silent 0: exit 1 on every run until filled.
    for _ in range(2):
        late = cli(HOURLY, "--until", until(T0 + 48 * H), env=capped)
        assert late.returncode == 1, late.stderr
        assert "16 missing hour(s) are older than the backfill cap" in late.stderr
        prom = (Path(env["M10_METRICS_DIR"]) / "m10_aos_cost_snapshot_hourly.prom").read_text()
        assert (
            'aos_cost_backfill_skipped_periods{granularity="hour",job='
            '"aos-cost-snapshot-hourly"} 16' in prom
        )
    assert len(periods(conn, "hour")) == 30 + 24  # the newer hours were done

    # Raising the cap and rerunning fills exactly the hole.
    wider = with_config(env, tmp_path, "wide.toml", backfill_max_hours=70, resnapshot_hours=0)
    filled = cli(HOURLY, "--until", until(T0 + 48 * H), env=wider)
    assert filled.returncode == 0, filled.stderr
    assert (summary(filled)["hours"], summary(filled)["skipped_by_cap"]) == (16, 0)
    hours = periods(conn, "hour")
    assert hours == [T0 - 22 * H + i * H for i in range(70)]
    assert (T0 + 30 * H, "acme", "compute", Decimal("-0.40"), 1) in snapshots(conn, "hour")


def test_reruns_are_idempotent_and_late_records_converge_within_the_window(
    cli: Any, conn: Conn, env: dict[str, str], tmp_path: Path
) -> None:
    for i, amount in enumerate(["0.10", "0.20", "0.30"]):
        add(conn, T0 - (3 - i) * H + H / 2, "acme", "compute", amount)
        add(conn, T0 - (3 - i) * H + H / 3, "acme", "compute", "0.000001")
    cfg = with_config(env, tmp_path, backfill_max_hours=6, resnapshot_hours=3)
    assert cli(HOURLY, "--until", until(T0), env=cfg).returncode == 0
    before = snapshots(conn, "hour")
    again = cli(HOURLY, "--until", until(T0), env=cfg)
    assert again.returncode == 0 and summary(again)["hours"] == 3  # the re-snapshot window
    assert snapshots(conn, "hour") == before  # same rows, nothing added or doubled
    assert [s[3] for s in before] == [Decimal("0.100001"), Decimal("0.200001"), Decimal("0.300001")]

    # A late record inside the window is picked up on the next pass...
    add(conn, T0 - 2 * H + H / 4, "acme", "compute", "5")
    # ...one older than the window is not (the daily job reports it), until asked.
    add(conn, T0 - 5 * H + H / 4, "acme", "compute", "7")
    assert cli(HOURLY, "--until", until(T0 + H), env=cfg).returncode == 0
    got = {s[0]: s[3] for s in snapshots(conn, "hour")}
    assert got[T0 - 2 * H] == Decimal("5.200001")
    assert T0 - 5 * H not in got
    assert cli(HOURLY, "--until", until(T0 + H), "--resnapshot-hours", "6", env=cfg).returncode == 0
    assert {s[0]: s[3] for s in snapshots(conn, "hour")}[T0 - 5 * H] == Decimal("7")

    # Records deleted at the source disappear from the snapshot on re-snapshot.
    conn.execute("DELETE FROM aos_cost.cost_records WHERE occurred_at >= %s", (T0 - H,))
    assert cli(HOURLY, "--until", until(T0 + H), env=cfg).returncode == 0
    assert T0 - H not in {s[0] for s in snapshots(conn, "hour")}
    assert T0 - H in periods(conn, "hour")  # the (now empty) hour stays done


def test_lease_held_by_another_host_exits_75_and_writes_nothing(
    cli: Any, conn: Conn, env: dict[str, str]
) -> None:
    conn.execute(
        "SELECT m10_recovery.acquire_lock('aos:cost_snapshot_hourly', 'other-host:4242:test', 60)"
    )
    add(conn, T0 - H / 2, "acme", "compute", "1")
    proc = cli(HOURLY, "--until", until(T0))
    assert proc.returncode == 75, proc.stderr
    assert "other-host:4242:test" in proc.stderr
    assert periods(conn, "hour") == [] and snapshots(conn, "hour") == []


@pytest.fixture
def gated(conn: Conn, env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """Config whose source read blocks while the test holds advisory lock 42."""
    conn.execute(GATE_FUNCTION)
    return with_config(
        env, tmp_path, source_query=GATED_QUERY, backfill_max_hours=3, resnapshot_hours=0
    )


def _start_blocked(conn: Conn, gated: dict[str, str]) -> Any:
    import subprocess
    import time

    from tests.conftest import BIN

    conn.execute("SELECT pg_advisory_lock(42)")
    proc = subprocess.Popen(
        [str(BIN / HOURLY), "--until", until(T0)],
        env=gated,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # wait until it holds the lease and waits on the gate
        waiting = conn.execute(
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()["n"]
        if waiting:
            return proc
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the first host never reached its source read")


def test_two_hosts_at_once_one_runs_the_other_exits_75(
    cli: Any, conn: Conn, gated: dict[str, str]
) -> None:
    add(conn, T0 - H / 2, "acme", "compute", "1.5")
    first = _start_blocked(conn, gated)
    try:
        holder = conn.execute(
            "SELECT holder_id FROM m10_recovery.distributed_locks "
            "WHERE lock_name = 'aos:cost_snapshot_hourly'"
        ).fetchone()
        assert holder and f":{first.pid}:" in holder["holder_id"]
        second = cli(HOURLY, "--until", until(T0), env=gated, timeout=30)
        assert second.returncode == 75, second.stderr
        assert summary(second) == {} and '"status": "skipped"' in second.stdout
    finally:
        conn.execute("SELECT pg_advisory_unlock(42)")
    _, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    assert len(periods(conn, "hour")) == 3
    assert snapshots(conn, "hour") == [(T0 - H, "acme", "compute", Decimal("1.5"), 1)]


def test_a_holder_that_lost_its_lease_commits_nothing(conn: Conn, gated: dict[str, str]) -> None:
    first = _start_blocked(conn, gated)
    try:
        conn.execute("SELECT * FROM m10_recovery.force_release_lock('aos:cost_snapshot_hourly')")
        conn.execute(
            "SELECT m10_recovery.acquire_lock('aos:cost_snapshot_hourly', 'new-holder:1:test', 60)"
        )
    finally:
        conn.execute("SELECT pg_advisory_unlock(42)")
    _, err = first.communicate(timeout=30)
    assert first.returncode == 1, err
    assert "no longer held" in err
    assert periods(conn, "hour") == []


@pytest.mark.parametrize(
    ("query", "named"),
    [
        (
            "SELECT tenant_id, category, sum(amount_usd) AS amount FROM aos_cost.cost_records "
            "WHERE occurred_at >= %(period_start)s AND occurred_at < %(period_end)s GROUP BY 1, 2",
            "missing amount_usd, record_count; unexpected amount",
        ),
        (
            "SELECT tenant_id, category, sum(amount_usd)::float8 AS amount_usd, count(*) AS "
            "record_count FROM aos_cost.cost_records WHERE occurred_at >= %(period_start)s AND "
            "occurred_at < %(period_end)s GROUP BY 1, 2",
            "amount_usd has type oid 701 (float8)",
        ),
        (
            "SELECT tenant_id, category, amount_usd, 1 AS record_count FROM aos_cost.cost_records",
            "a query filtering on %(period_start)s",
        ),
        ("SELEC tenant_id FROM x WHERE %(period_start)s < %(period_end)s", "syntax error"),
        (
            "WITH gone AS (DELETE FROM aos_cost.cost_snapshots RETURNING 1)"
            " SELECT 't' AS tenant_id, 'c' AS category, 1::numeric AS amount_usd,"
            " 1 AS record_count WHERE %(period_start)s < %(period_end)s",
            "read-only transaction",
        ),
    ],
    ids=["wrong-columns", "float-amount", "no-placeholders", "syntax", "writes"],
)
def test_a_bad_source_query_exits_78_naming_the_problem(
    cli: Any, conn: Conn, env: dict[str, str], tmp_path: Path, query: str, named: str
) -> None:
    add(conn, T0 - H / 2, "acme", "compute", "1")
    proc = cli(HOURLY, "--until", until(T0), env=with_config(env, tmp_path, source_query=query))
    assert proc.returncode == 78, proc.stderr
    [error] = error_lines(proc)
    assert named in error["message"] and "source_query" in error["message"]
    assert "Traceback" not in proc.stderr
    assert periods(conn, "hour") == []


def test_source_lost_mid_run_exits_69_and_the_failing_hour_is_not_written(
    cli: Any, conn: Conn, env: dict[str, str], tmp_path: Path
) -> None:
    for i in range(4):
        add(conn, T0 + i * H + H / 2, "acme", "compute", "1")
    dies_at_hour_2 = """
SELECT tenant_id, category, sum(amount_usd) AS amount_usd, count(*) AS record_count
  FROM aos_cost.cost_records
 WHERE occurred_at >= %(period_start)s AND occurred_at < %(period_end)s
   AND (SELECT CASE WHEN %(period_start)s::timestamptz = '2026-01-10T02:00:00Z'
               THEN pg_terminate_backend(pg_backend_pid()) ELSE true END)
 GROUP BY tenant_id, category
"""
    cfg = with_config(
        env, tmp_path, source_query=dies_at_hour_2, backfill_max_hours=4, resnapshot_hours=0
    )
    proc = cli(HOURLY, "--until", until(T0 + 4 * H), env=cfg)
    assert proc.returncode == 69, proc.stderr
    assert "unreachable" in error_lines(proc)[0]["message"]
    assert periods(conn, "hour") == [T0, T0 + H]
    assert [s[0] for s in snapshots(conn, "hour")] == [T0, T0 + H]


def test_dry_run_touches_nothing(cli: Any, conn: Conn, env: dict[str, str]) -> None:
    add(conn, T0 - H / 2, "acme", "compute", "1")
    proc = cli(HOURLY, "--dry-run", "--until", until(T0))
    assert proc.returncode == 0, proc.stderr
    assert summary(proc)["would_snapshot"] == 168
    assert periods(conn, "hour") == []
    assert (
        conn.execute("SELECT count(*) AS n FROM m10_recovery.distributed_locks").fetchone()["n"]
        == 0
    )
    assert not Path(env["M10_METRICS_DIR"]).exists()
    daily = cli("aos-cost-snapshot-daily", "--dry-run", "--until", until(T0))
    assert daily.returncode == 0 and summary(daily) == {"days": [], "pending": []}


def test_until_in_the_future_is_refused(cli: Any) -> None:
    proc = cli(HOURLY, "--until", "2999-01-01T00:00:00Z")
    assert proc.returncode == 78 and "after the database clock" in proc.stderr
    assert cli(HOURLY, "--until", "yesterday").returncode == 2


def test_jobs_read_the_source_through_a_read_only_grant(
    cli: Any, conn: Conn, dsn: str, env: dict[str, str], tmp_path: Path
) -> None:
    import psycopg

    conn.execute("CREATE ROLE costjob_t LOGIN IN ROLE m10_ops")
    job_dsn = dsn.replace("postgresql://postgres@", "postgresql://costjob_t@")
    add(conn, T0 - H / 2, "acme", "compute", "2.50")
    proc = cli(HOURLY, "--until", until(T0), env={**env, "M10_DATABASE_URL": job_dsn})
    assert proc.returncode == 0, proc.stderr
    assert snapshots(conn, "hour") == [(T0 - H, "acme", "compute", Decimal("2.50"), 1)]
    with psycopg.connect(job_dsn, autocommit=True) as job:
        assert job.execute("SELECT count(*) FROM aos_cost.cost_records").fetchone() == (1,)
        for statement in (
            "INSERT INTO aos_cost.cost_records (occurred_at, tenant_id, "
            "category, amount_usd) VALUES (now(), 'x', 'y', 1)",
            "UPDATE aos_cost.cost_records SET amount_usd = 0",
            "DELETE FROM aos_cost.cost_records",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                job.execute(statement)
    conn.execute("CREATE TABLE public.secret_costs AS SELECT * FROM aos_cost.cost_records")
    hidden = (
        "SELECT tenant_id, category, amount_usd, 1::bigint AS record_count FROM "
        "public.secret_costs WHERE occurred_at >= %(period_start)s AND "
        "occurred_at < %(period_end)s"
    )
    proc = cli(
        HOURLY,
        "--until",
        until(T0),
        env={**with_config(env, tmp_path, source_query=hidden), "M10_DATABASE_URL": job_dsn},
    )
    assert proc.returncode == 78 and "grant SELECT on the source" in proc.stderr


def test_an_hour_with_a_null_tenant_is_skipped_on_its_own_until_the_source_is_fixed(
    cli: Any, conn: Conn, env: dict[str, str], tmp_path: Path
) -> None:
    add(conn, T0 - 3 * H + H / 2, "acme", "compute", "1")
    add(conn, T0 - 2 * H + H / 2, "acme", "compute", "2")
    add(conn, T0 - H + H / 2, "acme", "compute", "3")
    nulls_in = """
SELECT CASE WHEN %(period_start)s::timestamptz {} THEN NULL
            ELSE tenant_id END AS tenant_id,
       category, sum(amount_usd) AS amount_usd, count(*) AS record_count
  FROM aos_cost.cost_records
 WHERE occurred_at >= %(period_start)s AND occurred_at < %(period_end)s
 GROUP BY 1, 2
"""
    prom = Path(env["M10_METRICS_DIR"]) / "m10_aos_cost_snapshot_hourly.prom"
    gauge = 'aos_cost_bad_periods{granularity="hour",job="aos-cost-snapshot-hourly"}'

    # The middle hour is bad: it is rolled back and reported, the hours around it are written.
    middle = with_config(
        env,
        tmp_path,
        "middle.toml",
        backfill_max_hours=3,
        source_query=nulls_in.format("= '2026-01-09T22:00:00Z'"),
    )
    for _ in range(2):  # every run tries it again; the gauge stays set
        proc = cli(HOURLY, "--until", until(T0), env=middle)
        assert proc.returncode == 1, proc.stderr
        assert "empty tenant_id" in error_lines(proc)[0]["message"]
        assert "1 hour(s) refused" in proc.stderr and "Traceback" not in proc.stderr
        assert periods(conn, "hour") == [T0 - 3 * H, T0 - H]
        assert f"{gauge} 1" in prom.read_text()

    # Every hour bad: nothing written at all is bad input (65).
    every = with_config(
        env,
        tmp_path,
        "every.toml",
        backfill_max_hours=3,
        resnapshot_hours=3,
        source_query=nulls_in.format("IS NOT NULL"),
    )
    proc = cli(HOURLY, "--until", until(T0), env=every)
    assert proc.returncode == 65, proc.stderr
    assert "3 hour(s) refused" in proc.stderr
    assert periods(conn, "hour") == [T0 - 3 * H, T0 - H]

    fixed = cli(
        HOURLY,
        "--until",
        until(T0),
        env=with_config(env, tmp_path, "fixed.toml", backfill_max_hours=3),
    )
    assert fixed.returncode == 0, fixed.stderr
    assert periods(conn, "hour") == [T0 - 3 * H, T0 - 2 * H, T0 - H]
    assert (T0 - 2 * H, "acme", "compute", Decimal("2"), 1) in snapshots(conn, "hour")
    assert f"{gauge} 0" in prom.read_text()


def test_cost_status_shows_a_hole_behind_the_newest_hour(
    cli: Any, conn: Conn, env: dict[str, str], tmp_path: Path
) -> None:
    cfg = with_config(env, tmp_path, backfill_max_hours=6)
    assert cli(HOURLY, env=cfg).returncode == 0
    whole = cli("m10", "cost", "status", env=cfg)
    assert re.search(r"^hours_missing\s+0 in the last 6 h$", whole.stdout, re.M), whole.stdout
    conn.execute(
        "DELETE FROM aos_cost.snapshot_periods WHERE granularity = 'hour' AND "
        "period_start = date_trunc('hour', now(), 'UTC') - interval '4 hours'"
    )
    holed = cli("m10", "cost", "status", env=cfg)
    hole = re.search(
        r"^hours_missing\s+1 in the last 6 h: (\S+ \S+) \.\. (\S+ \S+) UTC", holed.stdout, re.M
    )
    assert hole and hole.group(1) == hole.group(2), holed.stdout
    doc = json.loads(cli("m10", "cost", "status", "--json", env=cfg).stdout)
    assert doc["hours_missing"] == 1 and doc["last_hour"] > doc["first_missing_hour"]
    assert cli(HOURLY, env=cfg).returncode == 0  # the next run fills it
    assert json.loads(cli("m10", "cost", "status", "--json", env=cfg).stdout)["hours_missing"] == 0
