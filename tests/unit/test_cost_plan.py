"""Pure parts of the cost jobs: period planning, column checks, settings, the anomaly rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from m10jobs.config import load_config
from m10jobs.errors import ConfigError
from m10jobs.jobs.cost import common as cc
from m10jobs.jobs.cost import parse_until
from m10jobs.jobs.cost.daily import judge
from m10jobs.jobs.cost.settings import CostSettings

H = timedelta(hours=1)
END = datetime(2026, 1, 10, tzinfo=UTC)
NONE = cc.History(None, 0)


def hours(*offsets: int) -> list[datetime]:
    return [END + o * H for o in offsets]


def test_first_run_takes_the_whole_cap() -> None:
    plan = cc.plan_periods(set(), NONE, END, H, cap=4, redo=2)
    assert plan == cc.Plan(hours(-4, -3, -2, -1), 0)


def test_only_missing_periods_plus_the_redo_window() -> None:
    done = set(hours(-6, -5, -4, -3, -2))
    plan = cc.plan_periods(done, cc.History(END - 6 * H, 0), END, H, cap=6, redo=2)
    assert plan.periods == hours(-2, -1)
    no_redo = cc.plan_periods(done, cc.History(END - 6 * H, 0), END, H, cap=6, redo=0)
    assert no_redo.periods == hours(-1)


def test_a_hole_inside_the_cap_is_filled_and_one_outside_is_counted() -> None:
    done = set(hours(-10, -9, -4, -2))  # -8..-5 and -3, -1 missing
    plan = cc.plan_periods(
        done - {END - 10 * H, END - 9 * H}, cc.History(END - 10 * H, 2), END, H, cap=5, redo=0
    )
    assert plan.periods == hours(-5, -3, -1)
    assert plan.skipped == 3  # -8, -7, -6


def test_redo_never_reaches_past_the_cap() -> None:
    plan = cc.plan_periods(set(hours(-2, -1)), cc.History(END - 2 * H, 0), END, H, cap=2, redo=50)
    assert plan.periods == hours(-2, -1)


def test_floor_is_utc() -> None:
    t = datetime(2026, 1, 10, 1, 30, tzinfo=UTC).astimezone(timezone(timedelta(hours=5)))
    assert cc.floor(t, cc.HOUR) == datetime(2026, 1, 10, 1, tzinfo=UTC)
    assert cc.floor(t, cc.DAY) == datetime(2026, 1, 10, tzinfo=UTC)


def test_until_parses_iso_and_defaults_to_utc() -> None:
    assert parse_until(None, None, "2026-01-10T05:00") == END + 5 * H
    assert parse_until(None, None, "2026-01-10T06:00+01:00") == END + 5 * H


@pytest.mark.parametrize(
    ("columns", "named"),
    [
        ([("tenant_id", 25), ("category", 25), ("amount_usd", 1700)], "missing record_count"),
        (
            [
                ("tenant_id", 25),
                ("category", 25),
                ("amount_usd", 1700),
                ("record_count", 20),
                ("note", 25),
            ],
            "unexpected note",
        ),
        (
            [("tenant_id", 25), ("category", 25), ("amount_usd", 701), ("record_count", 20)],
            "amount_usd::numeric",
        ),
        (
            [("tenant_id", 2950), ("category", 25), ("amount_usd", 1700), ("record_count", 20)],
            "tenant_id::text",
        ),
        (
            [
                ("tenant_id", 25),
                ("tenant_id", 25),
                ("category", 25),
                ("amount_usd", 1700),
                ("record_count", 20),
            ],
            "duplicate tenant_id",
        ),
    ],
)
def test_wrong_columns_are_named(columns: list[tuple[str, int]], named: str) -> None:
    with pytest.raises(ConfigError, match="wrong columns") as info:
        cc.check_columns(columns)
    assert named in str(info.value)


def test_right_columns_pass() -> None:
    cc.check_columns(
        [("category", 1043), ("tenant_id", 25), ("amount_usd", 20), ("record_count", 23)]
    )


def test_settings_defaults_and_exact_decimals(tmp_path: Path) -> None:
    s = load_config(None, env={}).settings(CostSettings)
    assert (s.backfill_max_hours, s.resnapshot_hours, s.anomaly_k) == (168, 3, Decimal(3))
    assert "%(period_start)s" in s.query
    path = tmp_path / "c.toml"
    path.write_text('[cost]\nanomaly_k = 2.5\nanomaly_min_amount_usd = "0.10"\n')
    s = load_config(str(path), env={}).settings(CostSettings)
    assert (s.anomaly_k, s.anomaly_min_amount_usd) == (Decimal("2.5"), Decimal("0.10"))


@pytest.mark.parametrize(
    "line",
    [
        'anomaly_k = "lots"',
        "anomaly_k = -1",
        "backfill_max_hours = 0",
        "baseline_days = true",
        'source_query = ""',
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, line: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[cost]\n{line}\n")
    with pytest.raises(ConfigError, match=f"cost.{line.split()[0]}"):
        load_config(str(path), env={}).settings(CostSettings)


def test_anomaly_rule_needs_k_sigma_min_amount_and_history() -> None:
    s = CostSettings(
        source_query="",
        baseline_min_days=3,
        anomaly_k=Decimal(3),
        anomaly_min_amount_usd=Decimal(50),
    )
    mean, sd = Decimal(100), Decimal(10)
    assert judge(Decimal("130.01"), mean, sd, 7, s) == Decimal(130)
    assert judge(Decimal(130), mean, sd, 7, s) is None  # not above
    assert judge(Decimal(500), mean, sd, 2, s) is None  # too little history
    assert judge(Decimal(40), Decimal(10), Decimal(0), 7, s) is None  # below the minimum
