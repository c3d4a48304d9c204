"""Health checks: what `m10 status` reports, and the model its checks fill in.

A check is one function `fn(st, config, conn)` that reads one piece of state, records
what it saw in one section of the Status (`st.pipeline[...]`, `st.artifacts[...]`,
`st.redis`) and calls `st.red(check_id, message, fix)` for each problem (docs/runbook.md
has a section per check id).  Each flow owns its checks in its own `health.py`,
registered with `@checks(section)` on the module's `checks = Checks()` and named on its
Job (`checks="m10jobs.jobs.<flow>.health:checks"`, imported only by `m10 status`);
checks of no flow (the engines: PostgreSQL, Redis) are in m10jobs/health/engines.py, and
the jobs table (runs, timers, leases) in m10jobs/health/runs.py.  `m10 status`
(m10jobs/cli/ops/status.py) only gathers them and renders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from m10jobs.errors import ExitCode

STATEMENT_TIMEOUT_MS = 5000
"""Every status query's (and Redis call's) bound: a status screen never hangs."""

Section = Literal["pipeline", "artifacts", "engines"]
SECTIONS: tuple[Section, ...] = ("pipeline", "artifacts", "engines")
"""The order checks run in (and their red lines appear): cluster pipeline, artifacts,
engines."""
CheckFn = Callable[["Status", Any, Any], None]
"""fn(st, config, conn): conn is the read-only status session (None for a check that
declares no database)."""


@dataclass(frozen=True)
class Check:
    fn: CheckFn
    section: Section
    database: bool
    """Needs the database: skipped (the red `database` line says why) when it is down."""


class Checks:
    """A module's health checks, in the order they are defined.

    checks = Checks()

    @checks("artifacts", database=True)
    def cost_gap(st: Status, config: Config, conn: Connection) -> None: ...
    """

    def __init__(self) -> None:
        self._found: list[Check] = []

    def __call__(self, section: Section, *, database: bool = False) -> Callable[[CheckFn], CheckFn]:
        def add(fn: CheckFn) -> CheckFn:
            self._found.append(Check(fn, section, database))
            return fn

        return add

    def __iter__(self) -> Iterator[Check]:
        return iter(self._found)


@dataclass
class Problem:
    """One red line: what is wrong, the command that fixes it, its runbook section id."""

    check: str
    message: str
    fix: str

    @property
    def runbook(self) -> str:
        """Its runbook section, at a path that exists here (the installed docs on a host)."""
        from m10jobs.docpaths import doc_path

        return f"{doc_path('runbook.md')}#{self.check}"


@dataclass
class JobRow:
    job: str
    last_run: float | None = None
    exit_code: int | None = None
    meaning: str | None = None
    last_ok: float | None = None
    source: str = "none"
    next_elapse: str = "n/a"
    leases: list[str] = field(default_factory=list)
    error: str | None = None
    """Its last run's own error line(s), from the run history (when that run failed)."""


@dataclass
class Status:
    host: str
    now: float
    jobs: list[JobRow] = field(default_factory=list)
    pipeline: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    redis: dict[str, Any] = field(default_factory=dict)
    postgres: dict[str, Any] = field(default_factory=dict)
    schema: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    refused: bool = False  # this release does not fit the database's schema (exit 78)

    def red(self, check: str, message: str, fix: str) -> None:
        self.problems.append(Problem(check, message, fix))

    def elsewhere(self, script: str, known: bool) -> str | None:
        """Why a host-local artifact of `script` is not this host's to keep, or None.

        Several hosts run the same timers and one wins the lease: a host whose last run
        was skipped (75), or which never ran the job while its runs are recorded here
        (`known`: metrics or systemd), is not where that job's files are kept."""
        row = next((j for j in self.jobs if j.job == script), None)
        if row is not None and row.exit_code == ExitCode.TEMPFAIL:
            return f"{script} last skipped here (lease held by another host)"
        if row is not None and row.exit_code is None and known:
            return f"{script} has not run on this host"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "time": iso(self.now),
            "ok": not self.problems,
            "jobs": [asdict(j) for j in self.jobs],
            "pipeline": self.pipeline,
            "artifacts": self.artifacts,
            "redis": self.redis,
            "postgres": self.postgres,
            "schema": self.schema,
            "config": self.config,
            "problems": [{**asdict(p), "runbook": p.runbook} for p in self.problems],
        }


# --- formatting -------------------------------------------------------------------------


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def human(seconds: float | None) -> str:
    """12s, 5m, 3h12m, 2d4h: ages an operator reads at a glance."""
    if seconds is None:
        return "-"
    s = int(abs(seconds))
    if s < 120:
        text = f"{s}s"
    elif s < 3600:
        text = f"{s // 60}m"
    elif s < 172800:
        text = f"{s // 3600}h{s % 3600 // 60:02d}m"
    else:
        text = f"{s // 86400}d{s % 86400 // 3600}h"
    return f"-{text}" if seconds < 0 else text


def runs_recorded(config: Any) -> bool:
    """Whether this host records its runs (metrics files or systemd): only then does
    "no record of a job" mean it has not run here."""
    from m10jobs.edges import systemd

    return bool(config.metrics_dir) or systemd.present()
