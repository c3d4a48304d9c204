"""Health of the fallback uploads (`m10 status`, ARTIFACTS): this host's files waiting
for object storage."""

from __future__ import annotations

from typing import Any

from m10jobs.health import Checks, Status, human

FALLBACK_LATE_S = 1800
"""A fallback upload is red once it waited two retry intervals."""

checks = Checks()


@checks("artifacts")
def check_uploads(st: Status, config: Any, conn: Any) -> None:
    from m10jobs.edges import fallback

    directory = fallback.fallback_dir(config)
    entries = fallback.pending(directory)
    oldest: float | None = None
    for entry in entries:
        meta = entry.read_meta_or_none() or {}
        hours = fallback.age_hours(meta)
        oldest = hours * 3600 if oldest is None else max(oldest, hours * 3600)
    st.artifacts["fallback_uploads"] = {
        "dir": str(directory),
        "pending": len(entries),
        "oldest_age_s": oldest,
    }
    if entries and (oldest or 0) > FALLBACK_LATE_S:
        st.red(
            "uploads-pending",
            f"{len(entries)} fallback upload(s) pending in {directory}, "
            f"oldest failed first {human(oldest)} ago",
            "m10-retry-r2-fallbacks --verbose   (is object storage reachable?)",
        )
