"""The maintenance tables ([maintenance], [dead_letter], [matviews], [retention]).

Named by the declaration in __init__ and imported when the config is read or a pass
runs; still cheap: no driver imports.  The lease names live in __init__ (re-exported).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from m10jobs.jobs.maintenance import DL_LOCK as DL_LOCK
from m10jobs.jobs.maintenance import RETENTION_LOCK as RETENTION_LOCK
from m10jobs.jobs.outbox import DEAD_LETTER_STREAM
from m10jobs.settings import setting

if TYPE_CHECKING:
    from m10jobs.config import Config


@dataclass(frozen=True)
class Source:
    """A consumer group whose stuck entries dead-letter routing moves on."""

    stream: str = setting("", "a stream with a consumer group to watch (required)")
    group: str = setting("", "its consumer group (required)")

    def problems(self) -> Iterator[str]:
        for key in ("stream", "group"):
            if not getattr(self, key):
                yield f"{key}: is missing; each source needs a stream and a group"


@dataclass(frozen=True)
class DeadLetterSettings:
    """[dead_letter]: which consumer groups are watched, the limits, the replay cap."""

    SECTION: ClassVar[str] = "dead_letter"

    stream: str = setting(DEAD_LETTER_STREAM, "the dead-letter stream")
    sources: tuple[Source, ...] = setting(
        (),
        "[[dead_letter.sources]]: (stream, group) pairs whose stuck entries are routed",
        example=[{"stream": "m10:outbox", "group": "workers"}],
    )
    max_deliveries: int = setting(5, "a pending entry delivered this often is dead", min=1)
    max_idle_seconds: int = setting(3600, "a pending entry idle this long is dead (0: off)", min=0)
    batch_size: int = setting(100, "entries per page/batch", min=1, max=10_000)
    max_replays: int = setting(3, "replays of one event before it is abandoned", min=0)

    @property
    def max_idle_ms(self) -> int:
        return self.max_idle_seconds * 1000


@dataclass(frozen=True)
class MaintenanceSettings:
    """[maintenance]: the orchestrator's own checks."""

    SECTION: ClassVar[str] = "maintenance"

    outbox_stale_seconds: int = setting(
        600,
        "oldest pending outbox event older than this (or no live leader) is reported unhealthy",
        min=1,
    )


def _view_names(names: tuple[str, ...]) -> str | None:
    bad = [n for n in names if n.count(".") > 1]
    return f'names like "schema.view" (not {bad[0]!r})' if bad else None


@dataclass(frozen=True)
class MatviewSettings:
    """[matviews]: which materialized views maintenance refreshes."""

    SECTION: ClassVar[str] = "matviews"

    views: tuple[str, ...] = setting(
        (),
        "views to refresh, one lease matview_<name> each",
        check=_view_names,
        example=["public.daily_totals"],
    )
    min_interval_seconds: int = setting(300, "a view refreshed more recently is left alone", min=0)


def views(config: Config) -> list[str]:
    """The configured views ([matviews] views), one lease each."""
    return list(config.settings(MatviewSettings).views)


@dataclass(frozen=True)
class Policy:
    """One retention policy: whether it runs and how old is too old."""

    enabled: bool = setting(True, "false: this policy is skipped")
    max_age_days: int = setting(30, "rows/files older than this are removed", min=0)


@dataclass(frozen=True)
class StatsPolicy:
    """The stats CSV policy, counted in months (one file per month)."""

    enabled: bool = setting(True, "false: this policy is skipped")
    max_age_months: int = setting(13, "month CSVs older than this are removed", min=1)


@dataclass(frozen=True)
class RetentionSettings:
    """[retention]: how long each table and file kind is kept, where archives go."""

    SECTION: ClassVar[str] = "retention"

    batch_size: int = setting(
        5000, "rows per delete batch (one short transaction)", min=1, max=100_000
    )
    workers: int = setting(
        2,
        "batches in flight at once, each on its own connection "
        "(returning the rows costs PostgreSQL more than the DELETE)",
        min=1,
        max=8,
    )
    archive_prefix: str = setting("retention/", "object key prefix of archived chunks")
    archive_dir: str = setting(
        "",
        "local archive directory when no bucket is set (default: $M10_STATE_DIR/retention-archive)",
        example="/srv/m10/retention-archive",
    )
    # the table policies, in the order they run
    replay_log: Policy = setting(Policy(max_age_days=30), "m10_recovery.replay_log")
    outbox_dead_lettered: Policy = setting(
        Policy(max_age_days=30),
        "dead-lettered outbox rows, by when they were (dead_letter_archive has them)",
    )
    dead_letter_archive: Policy = setting(
        Policy(max_age_days=90), "m10_recovery.dead_letter_archive"
    )
    outbox: Policy = setting(Policy(max_age_days=7), "published/dead outbox rows")
    retention_jobs: Policy = setting(Policy(max_age_days=180), "m10_recovery.retention_jobs")
    job_runs: Policy = setting(
        Policy(max_age_days=30), "m10_recovery.job_runs, the run history (m10 history)"
    )
    fallback_uploads: Policy = setting(
        Policy(max_age_days=7), "fallback files behind an .uploaded marker"
    )
    stats_csv: StatsPolicy = setting(StatsPolicy(), "daily stats month CSVs")
    canary_reports: Policy = setting(Policy(max_age_days=30), "canary report history")
