"""[synthetic_traffic] and the synthetic flow's names (lease, event type).

Imported by the declaration in __init__, so it stays cheap: no driver imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from m10jobs.settings import setting

LOCK = "m10:synthetic_traffic"


EVENT_TYPE = "m10.synthetic"


@dataclass(frozen=True)
class SyntheticSettings:
    """[synthetic_traffic]: how many probe events per pass and when one counts as lost."""

    SECTION: ClassVar[str] = "synthetic_traffic"

    count: int = setting(10, "synthetic events enqueued per pass", min=0, max=10_000)
    stall_seconds: float = setting(
        900.0, "a pending synthetic event older than this fails the pass", min=1
    )
    lookback_seconds: float = setting(7200.0, "how far back earlier events are checked", min=1)
