"""Pure parts of the maintenance tasks: limits, lineage keys, stream entry parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from m10jobs.config import load_config
from m10jobs.errors import ConfigError
from m10jobs.jobs.maintenance import deadletters as dl
from m10jobs.jobs.maintenance import retention_files as retention
from m10jobs.jobs.maintenance.settings import DeadLetterSettings, views

ST = DeadLetterSettings(
    "dl", (), max_deliveries=3, max_idle_seconds=60, batch_size=10, max_replays=2
)


def test_over_limit() -> None:
    assert dl.over_limit({"times_delivered": 2, "time_since_delivered": 1000}, ST) is None
    assert "delivered 3 times" in dl.over_limit(
        {"times_delivered": 3, "time_since_delivered": 0}, ST
    )
    assert "idle 60s" in dl.over_limit({"times_delivered": 1, "time_since_delivered": 60_000}, ST)


@pytest.mark.parametrize(
    ("key", "event_id", "want"),
    [
        ("k", 1, "k"),
        ("k#replay3", 1, "k"),
        ("a#replay1#replay2", None, "a#replay1"),
        (None, 5, "event:5"),
        (None, None, "dl:s:1-0"),
    ],
)
def test_lineage(key: str | None, event_id: int | None, want: str) -> None:
    assert dl.lineage_of(key, event_id, "s", "1-0") == want


def test_archive_row_parses_fields_and_tolerates_gaps() -> None:
    row = dl.archive_row(
        "m10:dead_letter",
        "1700000000000-0",
        {
            b"event_id": b"12",
            b"idempotency_key": b"k#replay1",
            b"attempts": b"4",
            b"payload": b"{}",
        },
    )
    assert row["event_id"] == 12 and row["delivery_count"] == 4 and row["reason"] == "unknown"
    assert row["lineage_key"] == "k" and row["dead_lettered_at"].year == 2023
    bare = dl.archive_row("d", "5-0", {b"event_id": b"x"})
    assert bare["event_id"] is None and bare["lineage_key"] == "dl:d:5-0"


def _config(tmp_path: Path, toml: str):  # type: ignore[no-untyped-def]
    p = tmp_path / "c.toml"
    p.write_text(toml)
    return load_config(str(p), env={"M10_LOG_DIR": str(tmp_path)})


def test_matview_names_validated(tmp_path: Path) -> None:
    assert views(_config(tmp_path, '[matviews]\nviews = ["a.b", "c"]\n')) == ["a.b", "c"]
    with pytest.raises(ConfigError, match=r"matviews\.views"):
        views(_config(tmp_path, '[matviews]\nviews = ["a.b.c"]\n'))


def test_stats_csv_age_by_month_in_name(tmp_path: Path) -> None:
    for name in ("m10_stats_2000-01.csv", "m10_stats_2999-01.csv", "m10_stats_bad.csv"):
        (tmp_path / name).write_text("x")
    now = datetime(2026, 6, 1, tzinfo=UTC)  # the database clock, passed in
    groups = list(retention.stats_candidates(_config(tmp_path, ""), 13, now))
    assert [[p.name for p in g] for g in groups] == [
        ["m10_stats_2000-01.csv", "m10_stats_2000-01.csv.processed"]
    ]
