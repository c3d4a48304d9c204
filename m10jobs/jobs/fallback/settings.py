"""[retry_r2_fallbacks]: imported by the declaration in __init__, so it stays cheap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from m10jobs.settings import setting

MARGIN_S = 60
"""Kept free below the unit's timeout: the uploads in flight when the budget runs out
finish, the pass reports and releases its lease."""


@dataclass(frozen=True)
class RetrySettings:
    """[retry_r2_fallbacks]: when a file that keeps failing becomes an alert; how long
    and how wide a pass works."""

    SECTION: ClassVar[str] = "retry_r2_fallbacks"

    alert_after_hours: float = setting(
        24.0, "a file still not uploaded after this long fails the pass (exit 1)", min=0
    )
    time_budget_seconds: float = setting(
        0.0,
        "a pass starts no upload after this long and exits 1 with what is left (0: the "
        f"unit's timeout less {MARGIN_S} s; never more than that, nor 80% of the lease TTL)",
        min=0,
    )
    concurrent_uploads: int = setting(
        8, "uploads in flight at once (threads sharing one S3 client)", min=1, max=64
    )

    def budget(self, lease_ttl: int, job_timeout: int) -> float:
        """The pass's time budget, derived from its unit's timeout so they cannot drift."""
        ceiling = max(1.0, min(job_timeout - MARGIN_S, lease_ttl * 0.8))
        return min(self.time_budget_seconds, ceiling) if self.time_budget_seconds else ceiling
