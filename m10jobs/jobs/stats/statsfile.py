"""The daily stats checkpoint: `m10_stats_YYYY-MM.csv` and its `.processed` marker.

Shared by m10-daily-stats (writer) and `m10 postflight` (checker), so the
format is defined once.  A file that does not parse raises BadInput naming the
file and line: the job then overwrites nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from m10jobs.edges import files
from m10jobs.errors import BadInput

COLUMNS = (
    "date",
    "outbox_enqueued",
    "outbox_published",
    "publish_latency_p50_ms",
    "publish_latency_p95_ms",
    "dead_lettered",
    "dl_reconciled",
    "retention_rows_deleted",
    "locks_reclaimed",
    "synthetic_sent",
    "synthetic_arrived",
)
NAME = re.compile(r"^m10_stats_(\d{4})-(\d{2})\.csv$")
MARKER_SUFFIX = ".processed"


def csv_path(log_dir: Path, day: date) -> Path:
    return Path(log_dir) / f"m10_stats_{day:%Y-%m}.csv"


def marker_path(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)


def month_files(log_dir: Path) -> list[Path]:
    """Every stats CSV in log_dir, oldest month first."""
    if not Path(log_dir).is_dir():
        return []
    return sorted(p for p in Path(log_dir).iterdir() if NAME.match(p.name))


@dataclass
class StatsFile:
    path: Path
    rows: list[dict[str, str]]

    @property
    def dates(self) -> list[date]:
        return [date.fromisoformat(r["date"]) for r in self.rows]

    @property
    def last_date(self) -> date | None:
        return self.dates[-1] if self.rows else None


def parse(path: Path) -> StatsFile:
    """Read and check a stats CSV: header, one row per day of its month, ascending."""
    m = NAME.match(path.name)
    if not m:
        raise BadInput(f"{path}: not a stats file name (m10_stats_YYYY-MM.csv)")
    month = (int(m.group(1)), int(m.group(2)))
    text = files.read_text(path, files.STATS_CSV, missing_ok=True)
    if text is None:
        return StatsFile(path, [])
    reader = csv.reader(io.StringIO(text, newline=""))
    fix = "fix or restore the file (nothing was overwritten)"
    try:
        header = next(reader, None)
        if header is None:
            raise BadInput(f"{path}: line 1: empty file, expected a header; {fix}")
        if tuple(header) != COLUMNS:
            raise BadInput(f"{path}: line 1: unexpected header {','.join(header)!r}; {fix}")
        rows: list[dict[str, str]] = []
        previous: date | None = None
        for record in reader:
            line = reader.line_num
            if len(record) != len(COLUMNS):
                raise BadInput(
                    f"{path}: line {line}: expected {len(COLUMNS)} fields, got {len(record)}; {fix}"
                )
            try:
                day = date.fromisoformat(record[0])
            except ValueError:
                raise BadInput(f"{path}: line {line}: bad date {record[0]!r}; {fix}") from None
            if (day.year, day.month) != month:
                raise BadInput(
                    f"{path}: line {line}: {day} does not belong in this month's file; {fix}"
                )
            if previous is not None and day <= previous:
                raise BadInput(
                    f"{path}: line {line}: {day} is not after {previous} "
                    f"(duplicate or out of order); {fix}"
                )
            for col, value in zip(COLUMNS[1:], record[1:], strict=True):
                if value and not re.fullmatch(r"-?\d+(\.\d+)?", value):
                    raise BadInput(f"{path}: line {line}: {col}={value!r} is not a number; {fix}")
            rows.append(dict(zip(COLUMNS, record, strict=True)))
            previous = day
    except csv.Error as exc:
        raise BadInput(f"{path}: line {reader.line_num}: {exc}; {fix}") from None
    return StatsFile(path, rows)


def render(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r.get(k) is None else r[k] for k in COLUMNS})
    return out.getvalue().encode()


def marker_for(
    path: Path, data: bytes, rows: list[dict[str, Any]], *, upload_pending: bool = False
) -> dict[str, Any]:
    """The `.processed` marker; upload_pending says the CSV still has to reach object
    storage (kept in the marker, so it survives a failed run, a full disk or a crash)."""
    return {
        "file": path.name,
        "last_date": rows[-1]["date"] if rows else None,
        "rows": len(rows),
        "sha256": hashlib.sha256(data).hexdigest(),
        "upload_pending": upload_pending,
    }


def _marker_schema(obj: Any) -> dict[str, Any]:
    marker = files.json_object({"rows": int, "sha256": str})(obj)
    if marker["rows"] < 0 or not re.fullmatch(r"[0-9a-f]{64}", marker["sha256"]):
        raise ValueError("rows must be >= 0 and sha256 64 hex digits")
    last = marker.get("last_date")
    if last is not None:
        if not isinstance(last, str):
            raise ValueError(f"last_date is not a date string (got {last!r})")
        date.fromisoformat(last)
    if not isinstance(marker.get("upload_pending", False), bool):
        raise ValueError("upload_pending is not true/false")
    return marker


def read_marker(path: Path) -> dict[str, Any] | None:
    """The marker of a CSV, None when absent; BadInput naming it when it is not a
    regular file holding a valid marker."""
    return files.read_json(
        marker_path(path), files.STATS_MARKER, missing_ok=True, schema=_marker_schema
    )


def explains(marker: dict[str, Any], rows: list[dict[str, str]]) -> bool:
    """Is the CSV (rows) the marker's CSV plus days appended after it?  That is what a
    crash between the CSV's rename and the marker's leaves; anything else is an edit."""
    n = marker["rows"]
    return n <= len(rows) and hashlib.sha256(render(rows[:n])).hexdigest() == marker["sha256"]


def marker_mismatches(stats: StatsFile, marker: dict[str, Any] | None) -> list[str]:
    """How a parsed CSV disagrees with its marker (sha256, rows, last date); [] when whole.
    Shared by `m10 postflight` and `m10 status` so both judge a marker the same way."""
    if marker is None:
        return [f"marker {marker_path(stats.path).name} is missing"]
    found = []
    sha = hashlib.sha256(files.read_bytes(stats.path, files.STATS_CSV) or b"").hexdigest()
    if marker.get("sha256") != sha:
        found.append(
            f"sha256 {sha[:12]} differs from the marker's "
            f"{str(marker.get('sha256'))[:12]} (edited after export?)"
        )
    if marker.get("rows") != len(stats.rows):
        found.append(f"{len(stats.rows)} rows, marker says {marker.get('rows')}")
    last = stats.last_date.isoformat() if stats.last_date else None
    if marker.get("last_date") != last:
        found.append(f"last date {last}, marker says {marker.get('last_date')}")
    return found


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(n) for n in range((last - first).days + 1)]
