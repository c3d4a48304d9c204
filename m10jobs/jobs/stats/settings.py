"""[daily_stats] and the stats lease name.

Imported by the declaration in __init__, so it stays cheap: the checks import
what they need when a file is validated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from m10jobs.settings import setting

LOCK = "m10:daily_stats"


def _zone_name(name: str) -> str | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "an IANA time zone name such as UTC or Europe/Berlin"
    return None


def _object_prefix(prefix: str) -> str | None:
    from m10jobs.edges import fallback  # not at the top: this module is on every start-up path

    try:
        fallback.check_key(prefix + "m10_stats.csv")
    except ValueError as exc:
        return f"an object key prefix ({exc})"
    return None


@dataclass(frozen=True)
class DailyStatsSettings:
    """[daily_stats]: the day boundary, where the month CSVs are uploaded, and how long a
    host's export waits for another host computing."""

    SECTION: ClassVar[str] = "daily_stats"

    timezone: str = setting("UTC", "IANA zone whose midnight ends a day", check=_zone_name)
    key_prefix: str = setting(
        "m10/stats/", "object key prefix of the uploaded CSVs", check=_object_prefix
    )
    upload: bool = setting(True, "upload each changed month CSV (needs r2_bucket)")
    compute_wait_seconds: int = setting(
        60,
        "export: how long to wait for another host computing the newest day before "
        "skipping with 75",
        min=0,
        max=600,
    )
