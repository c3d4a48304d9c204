"""[retry_r2_fallbacks]: imported by the declaration in __init__, so it stays cheap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from m10jobs.settings import setting


@dataclass(frozen=True)
class RetrySettings:
    """[retry_r2_fallbacks]: when a file that keeps failing becomes an alert."""

    SECTION: ClassVar[str] = "retry_r2_fallbacks"

    alert_after_hours: float = setting(
        24.0, "a file still not uploaded after this long fails the pass (exit 1)", min=0
    )
