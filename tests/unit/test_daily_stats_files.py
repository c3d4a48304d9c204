"""The stats CSV format and object-key checks, without services."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from m10jobs.edges.fallback import check_key
from m10jobs.errors import BadInput
from m10jobs.jobs.stats.statsfile import COLUMNS, marker_for, parse, render


def row(day: str) -> dict[str, str]:
    return {c: (day if c == "date" else "1") for c in COLUMNS}


def test_render_parse_round_trip_and_marker(tmp_path: Path) -> None:
    path = tmp_path / "m10_stats_2026-10.csv"
    rows = [row("2026-10-01"), row("2026-10-02")]
    data = render(rows)
    path.write_bytes(data)
    parsed = parse(path)
    assert parsed.rows == rows and parsed.last_date == date(2026, 10, 2)
    assert marker_for(path, data, rows)["rows"] == 2
    assert parse(tmp_path / "m10_stats_2026-11.csv").rows == []  # absent: empty


@pytest.mark.parametrize(
    ("body", "line", "what"),
    [
        ("", 1, "empty file"),
        ("date,x\n", 1, "unexpected header"),
        ("{h}\n2026-10-01" + ",1" * 10 + "\n2026-10-01" + ",1" * 10 + "\n", 3, "not after"),
        ("{h}\n2026-11-01" + ",1" * 10 + "\n", 2, "does not belong"),
        ("{h}\n2026-10-01" + ",1" * 9 + ",abc\n", 2, "not a number"),
        ("{h}\nyesterday" + ",1" * 10 + "\n", 2, "bad date"),
    ],
)
def test_parse_names_file_and_line(tmp_path: Path, body: str, line: int, what: str) -> None:
    path = tmp_path / "m10_stats_2026-10.csv"
    path.write_text(body.replace("{h}", ",".join(COLUMNS)))
    with pytest.raises(BadInput) as err:
        parse(path)
    assert f"{path}: line {line}:" in str(err.value) and what in str(err.value)


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../x", "a/../../b", "a\\b", "./a"])
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError):
        check_key(key)


def test_safe_key_passes() -> None:
    assert check_key("m10/stats/m10_stats_2026-10.csv") == "m10/stats/m10_stats_2026-10.csv"
