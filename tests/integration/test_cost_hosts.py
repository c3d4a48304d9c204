"""Daily vs hourly cost runs on different hosts: After= orders them on one host only, so a
daily run that finds hours missing while another host's hourly run holds its lease waits for
it (bounded), else exits 75; never the false "hourly snapshots are missing" failure."""

from __future__ import annotations

import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.conftest import BIN
from tests.cost_support import (
    GATE_FUNCTION,
    GATED_QUERY,
    T0,
    Conn,
    D,
    H,
    add,
    periods,
    summary,
    until,
    with_config,
)

HOURLY, DAILY = "aos-cost-snapshot-hourly", "aos-cost-snapshot-daily"
UNTIL = until(T0 + 2 * D)


def _setup(
    cli: Any, conn: Conn, env: dict[str, str], tmp_path: Path, wait_s: int
) -> dict[str, str]:
    """Two complete days of hourly snapshots, then one hour of the older day lost (the
    hourly run on host-b will redo it): the daily run sees that day as missing hours."""
    add(conn, T0 + 5 * H + H / 2, "acme", "compute", "2.5")
    conn.execute(GATE_FUNCTION)
    cfg = with_config(
        env,
        tmp_path,
        source_query=GATED_QUERY,
        backfill_max_hours=72,
        resnapshot_hours=0,
        backfill_max_days=3,
        resnapshot_days=0,
        hourly_wait_seconds=wait_s,
    )
    assert cli(HOURLY, "--until", UNTIL, env=cfg).returncode == 0
    conn.execute("DELETE FROM aos_cost.snapshot_periods WHERE period_start = %s", (T0 + 5 * H,))
    return cfg


def _hourly_on_host_b(conn: Conn, cfg: dict[str, str]) -> subprocess.Popen[str]:
    """host-b's hourly run, holding its lease and stopped at its source read (gate 42)."""
    conn.execute("SELECT pg_advisory_lock(42)")
    proc = subprocess.Popen(
        [str(BIN / HOURLY), "--until", UNTIL],
        env={**cfg, "M10_HOSTNAME": "host-b"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if conn.execute(
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()["n"]:
            return proc
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("host-b's hourly run never reached its source read")


def _daily_on_host_a(cfg: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / DAILY), "--until", UNTIL],
        env={**cfg, "M10_HOSTNAME": "host-a"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_daily_waits_for_the_hourly_run_on_another_host_then_builds(
    cli: Any, conn: Conn, env: dict[str, str], tmp_path: Path
) -> None:
    cfg = _setup(cli, conn, env, tmp_path, wait_s=60)
    hourly = _hourly_on_host_b(conn, cfg)
    try:
        daily = _daily_on_host_a(cfg)
        time.sleep(1.5)
        assert daily.poll() is None, daily.communicate()  # waiting, not failed
    finally:
        conn.execute("SELECT pg_advisory_unlock(42)")
    assert hourly.wait(timeout=30) == 0, hourly.communicate()
    out, err = daily.communicate(timeout=60)
    assert daily.returncode == 0, err
    assert "waiting up to 60s" in err and "host-b" not in out
    built = summary(subprocess.CompletedProcess([], 0, out, err))["days"]
    assert "2026-01-10" in built, err  # the day whose hour host-b's run redid
    assert T0 in periods(conn, "day")
    day = conn.execute(
        "SELECT amount_usd FROM aos_cost.cost_snapshots WHERE granularity = "
        "'day' AND period_start = %s",
        (T0,),
    ).fetchone()
    assert day["amount_usd"] == Decimal("2.5")


def test_daily_skips_with_75_while_the_hourly_run_elsewhere_outlasts_the_wait(
    cli: Any, conn: Conn, env: dict[str, str], tmp_path: Path
) -> None:
    cfg = _setup(cli, conn, env, tmp_path, wait_s=1)
    hourly = _hourly_on_host_b(conn, cfg)
    try:
        t0 = time.monotonic()
        out, err = _daily_on_host_a(cfg).communicate(timeout=60)
        waited = time.monotonic() - t0
        days_built = periods(conn, "day")
    finally:
        conn.execute("SELECT pg_advisory_unlock(42)")
    assert hourly.wait(timeout=30) == 0
    assert "hourly snapshots are missing" in err and "still held by host-b:" in err
    assert '"exit_code": 75' in out and '"status": "skipped"' in out, out
    assert 1 <= waited < 20
    assert T0 not in days_built


def test_missing_hours_with_no_hourly_run_anywhere_still_fail(
    cli: Any, conn: Conn, env: dict[str, str], tmp_path: Path
) -> None:
    cfg = _setup(cli, conn, env, tmp_path, wait_s=60)
    t0 = time.monotonic()
    proc = cli(DAILY, "--until", UNTIL, env=cfg)
    assert proc.returncode == 1 and "hourly snapshots are missing" in proc.stderr
    assert time.monotonic() - t0 < 30  # no wait when nobody holds the hourly lease
