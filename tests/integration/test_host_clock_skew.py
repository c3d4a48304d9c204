"""A skewed host clock decides nothing: the database clock says which day or hour is over.

The jobs run as real processes under libfaketime (FAKETIME + LD_PRELOAD), the host
clock an hour or a day ahead or behind; PostgreSQL, started by the session fixtures
before, keeps the real clock.  Nothing unfinished may be stored, and what is stored must
equal an unskewed run's.  For the stats, the configured zone is chosen so that the
database's local time is 23:xx (host +1 h is then past midnight, the 00:05 timer's
case) or 00:xx (host -1 h is still in the day before).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.clock_support import SKEWS, needs_faketime, skewed
from tests.conftest import run_cli
from tests.cost_support import add, with_config
from tests.stats_support import stats_files

pytestmark = needs_faketime


def db_now(conn: Any) -> datetime:
    now: datetime = conn.execute("SELECT now() AS now").fetchone()["now"]
    # PostgreSQL was not skewed along with the jobs (the preload is only in their env).
    assert abs(now.timestamp() - time.time()) < 60
    return now.astimezone(UTC)


def zone_where_local_hour_is(now: datetime, hour: int) -> str:
    """An Etc/GMT zone in which `now` falls in `hour` (Etc/GMT-5 is UTC+5)."""
    offset = (hour - now.hour) % 24
    if offset > 14:
        offset -= 24
    return "Etc/GMT" + (f"{-offset:+d}" if offset else "")


def wait_clear_of_hour_end(conn: Any) -> datetime:
    """Not within 2 minutes of an hour's end: the test's hour stays the same throughout."""
    now = db_now(conn)
    if now.minute >= 58:
        time.sleep(3600 - now.minute * 60 - now.second + 5)
        now = db_now(conn)
    return now


@pytest.mark.parametrize(
    ("offset", "local_hour"), [("+1h", 23), ("-1h", 0), ("+1d", 12), ("-1d", 12)]
)
def test_daily_stats_stores_no_unfinished_day_with_the_host_clock_skewed(
    env: dict[str, str], conn: Any, tmp_path: Path, offset: str, local_hour: int
) -> None:
    now = wait_clear_of_hour_end(conn)
    zone = zone_where_local_hour_is(now, local_hour)
    from zoneinfo import ZoneInfo

    today = now.astimezone(ZoneInfo(zone)).date()
    config = tmp_path / "m10.toml"
    config.write_text(f'[daily_stats]\ntimezone = "{zone}"\n')
    for day, n in ((today - timedelta(2), 7), (today - timedelta(1), 11)):
        conn.execute(
            """INSERT INTO m10_recovery.outbox (event_type, payload, status, created_at)
               SELECT 'order.created', '{}', 'pending',
                      (%(day)s::date + time '00:30') AT TIME ZONE %(zone)s
                 FROM generate_series(1, %(n)s)""",
            {"day": day, "zone": zone, "n": n},
        )
    # The database's current day, unfinished: these must not be counted in any stored row.
    conn.execute(
        """INSERT INTO m10_recovery.outbox (event_type, payload, status, created_at)
           SELECT 'order.created', '{}', 'pending', now() FROM generate_series(1, 5)"""
    )
    args = ("--config", str(config), "--start-date", str(today - timedelta(2)))

    def stored() -> list[tuple[Any, ...]]:
        rows = conn.execute(
            "SELECT day, outbox_enqueued, timezone FROM m10_recovery.daily_stats ORDER BY day"
        ).fetchall()
        return [tuple(r.values()) for r in rows]

    run = run_cli("m10-daily-stats", *args, env=skewed(env, offset))
    assert run.returncode == 0, run.stderr
    assert stored() == [(today - timedelta(2), 7, zone), (today - timedelta(1), 11, zone)]
    assert all(d["day"] < today for d in conn.execute("SELECT day FROM m10_recovery.daily_stats"))
    skewed_files = stats_files(Path(env["M10_LOG_DIR"]))
    assert str(today) not in b"".join(skewed_files.values()).decode()
    skewed_rows = stored()

    # The same pass on an unskewed clock stores the same.
    conn.execute("DELETE FROM m10_recovery.daily_stats")
    for p in Path(env["M10_LOG_DIR"]).iterdir():
        p.unlink()
    plain = run_cli("m10-daily-stats", *args, env=env)
    assert plain.returncode == 0, plain.stderr
    assert stored() == skewed_rows
    assert {
        k: v for k, v in stats_files(Path(env["M10_LOG_DIR"])).items() if k.endswith(".csv")
    } == {k: v for k, v in skewed_files.items() if k.endswith(".csv")}

    # Asking for the database's current day is refused whatever the host clock says.
    early = run_cli("m10-daily-stats", *args, "--until", str(today), env=skewed(env, offset))
    assert early.returncode == 65 and "not a finished day yet" in early.stderr
    assert stored() == skewed_rows


@pytest.mark.parametrize("offset", list(SKEWS))
def test_cost_snapshots_store_no_unfinished_hour_or_day_with_the_host_clock_skewed(
    env: dict[str, str], conn: Any, tmp_path: Path, offset: str
) -> None:
    now = wait_clear_of_hour_end(conn)
    hour = now.replace(minute=0, second=0, microsecond=0)
    day = hour.replace(hour=0)
    for k in range(1, 30):  # one record per hour back to before yesterday, and this hour's
        add(conn, hour - timedelta(hours=k) + timedelta(minutes=10), "acme", "cpu", f"{k}.5")
    add(conn, now - timedelta(seconds=5), "acme", "cpu", "1000")
    cfg = with_config(env, tmp_path, backfill_max_hours=48, backfill_max_days=3)

    def stored() -> list[tuple[Any, ...]]:
        rows = conn.execute(
            """SELECT granularity, period_start, amount_usd, record_count
                 FROM aos_cost.snapshot_periods ORDER BY granularity, period_start"""
        ).fetchall()
        return [tuple(r.values()) for r in rows]

    for script in ("aos-cost-snapshot-hourly", "aos-cost-snapshot-daily"):
        proc = run_cli(script, env=skewed(cfg, offset))
        assert proc.returncode in (0, 1), proc.stderr  # 1: a day short of hours (the first)
    skewed_rows = stored()
    assert skewed_rows, "nothing was snapshotted"
    hours = [r for r in skewed_rows if r[0] == "hour"]
    days = [r for r in skewed_rows if r[0] == "day"]
    assert max(r[1] for r in hours) == hour - timedelta(hours=1)  # the last finished hour
    assert all(r[1] < day for r in days)
    assert all(r[2] < 1000 for r in skewed_rows)  # this hour's record is in nothing stored

    conn.execute("TRUNCATE aos_cost.snapshot_periods, aos_cost.cost_snapshots CASCADE")
    for script in ("aos-cost-snapshot-hourly", "aos-cost-snapshot-daily"):
        assert run_cli(script, env=cfg).returncode in (0, 1)
    assert stored() == skewed_rows


def test_the_preload_is_for_the_job_only(env: dict[str, str]) -> None:
    """The skewed env reaches the job and its children, never the services: this process
    (and so the PostgreSQL it started) keeps the real clock."""
    assert "LD_PRELOAD" not in os.environ or "faketime" not in os.environ["LD_PRELOAD"]
    assert "FAKETIME" not in env
