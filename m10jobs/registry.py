"""The job registry: each job is declared once, in its flow package's __init__ under
m10jobs.jobs (m10jobs/jobs/<flow>/__init__.py exposes JOB, or JOBS for several).

A declaration (Job) names the console script, lock(s), schedule, systemd
ordering, the artifacts it produces and consumes, its settings tables and the
pass function(s).  The click commands, `m10 run`, systemd units, the flow
inventory and the configuration reference are all derived from it.
Declarations import nothing heavy: they name their pass as a string
("m10jobs.jobs.outbox.process:process") that is imported when the pass runs,
so `--help` and a lock-busy pass never load a pass module or its clients.
Settings classes and key functions may be named the same way
("m10jobs.jobs.maintenance.settings:RetentionSettings"): then --help does not
build them either (each settings class is a dataclass, and making one is most
of what a declaration costs at start-up).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    import click

    from m10jobs.config import Config
    from m10jobs.runner import PassContext

PassFn = Callable[["PassContext"], "dict[str, Any] | None"]
PassRef = PassFn | str
"""A pass: the function, or "module:function" imported when the pass runs."""
KeysFn = Callable[["Config"], Sequence[str]]
T = TypeVar("T")
FlowKind = Literal["lock", "marker", "checkpoint", "table", "stream", "file"]
Scope = Literal["cluster", "host"]
"""cluster: state in PostgreSQL/Redis, one holder cluster-wide; host: state in this
host's files, one holder per host (lease `<lock>@<hostname>`)."""
HOST_PLACEHOLDER = "<hostname>"


def lease_name(lock: str, scope: Scope, host: str) -> str:
    """The one place a lease name is derived: host-local work is serialised per host,
    so each host's lease is its own row and hosts never skip each other."""
    return f"{lock}@{host}" if scope == "host" else lock


def owner(lease: str) -> tuple[Job, Task] | None:
    """The job and task a lease row's name belongs to (None: no job declares it): the one
    matcher of lease names (`matview_<view>` for a keyed lock, `<lock>@<host>` for a
    host-local task, the lock itself otherwise), for `m10 locks list` and `m10 status`."""
    base, at, host = lease.partition("@")
    for job in jobs():
        for task in job.tasks:
            if task.matches(base) and (task.scope == "host") == bool(at and host):
                return job, task
    return None


def scope_of(lease: str) -> Scope | None:
    """The declared scope of a lease row's name (None: no job declares it)."""
    found = owner(lease)
    return None if found is None else found[1].scope


@cache
def _import(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def resolve(ref: T | str) -> T:
    """A pass (or settings class, key function) named "m10jobs.jobs.outbox.process:process"
    imported now: declarations stay cheap to import (--help, a lock-busy pass) while pass
    modules import at the top."""
    return typing.cast(T, _import(ref)) if isinstance(ref, str) else ref


@dataclass(frozen=True)
class Flow:
    """An artifact a job produces, for the L7 flow inventory (seed: producer/consumer)."""

    kind: FlowKind
    name: str
    location: str
    purpose: str
    consumers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Task:
    """One unit of work under one lease.  `lock` may hold "{key}", expanded per
    key from config (matview_{key} -> one lease per view)."""

    name: str
    lock: str
    run: PassRef
    summary: str = ""
    keys: KeysFn | str | None = None
    """The keys from config, or "module:function" imported when the leases are named."""
    scope: Scope = "cluster"

    @property
    def pass_fn(self) -> PassFn:
        """The pass function, its module imported on first use."""
        return resolve(self.run)

    def instances(self, config: Config) -> list[tuple[str | None, str]]:
        """(key, lease name) for every lease this task takes in a run."""
        locks = (
            [(None, self.lock)]
            if self.keys is None
            else [(k, self.lock.format(key=k)) for k in resolve(self.keys)(config)]
        )
        return [(k, lease_name(lock, self.scope, config.host)) for k, lock in locks]

    @property
    def lease_pattern(self) -> str:
        """The lease name as documented: matview_* , m10:rollback@<hostname>."""
        return lease_name(self.lock.replace("{key}", "*"), self.scope, HOST_PLACEHOLDER)

    def matches(self, lock: str) -> bool:
        if self.keys is None:
            return lock == self.lock
        head, _, tail = self.lock.partition("{key}")
        return lock.startswith(head) and lock.endswith(tail) and len(lock) > len(head + tail)


@dataclass(frozen=True)
class Job:
    """A job's one declaration: its console script, lease(s), pass(es), schedule, flows and
    settings tables; the CLI, units, flow inventory and config reference derive from it."""

    script: str
    summary: str
    example: str
    schedule: str
    """systemd OnCalendar= expression."""
    lock: str | None = None
    run: PassRef | None = None
    tasks: tuple[Task, ...] = ()
    scope: Scope = "cluster"
    """Scope of the job's single pass (lock + run); a job with tasks declares it per task."""
    after: tuple[str, ...] = ()
    wants: tuple[str, ...] = ()
    produces: tuple[Flow, ...] = ()
    consumes: tuple[str, ...] = ()
    options: tuple[click.Option, ...] = ()
    ttl_seconds: int | None = None
    """Lease TTL; None uses the lease_ttl_seconds setting."""
    timeout_seconds: int = 240
    """Upper bound of one pass (TimeoutStartSec=, or RuntimeMaxSec= for a restarting
    unit), kept below the lease TTL."""
    jitter_seconds: int = 30
    """Timer RandomizedDelaySec=; 0 where the exact minute matters (daily stats at 00:05)."""
    restart: bool = False
    """Hand over by restarting: systemd starts the next pass as soon as one exits 0
    (Type=exec, Restart=on-success), so back-to-back passes leave a gap of one start-up
    instead of waiting for the timer's next tick (the outbox's lingering passes).  Not
    after a failure (the timer retries), a held lease (75: another host's chain runs) or
    `systemctl stop`; the timer still starts the chain at boot and after a failure."""
    exec_args: tuple[str, ...] = ()
    """Arguments the unit's ExecStart= passes (the outbox's --linger): what the unit does
    differently from an operator's hand run of the same script."""
    settings: tuple[type | str, ...] = ()
    """Its TOML tables: settings classes (m10jobs.settings) with a SECTION name, or
    "module:Class" (see tables)."""
    checks: str | None = None
    """Its health checks for `m10 status`: "m10jobs.jobs.<flow>.health:checks" (a
    m10jobs.health.Checks), imported only when status runs."""

    def __post_init__(self) -> None:
        if not self.tasks:
            if self.lock is None or self.run is None:
                raise TypeError(f"job {self.script}: give lock and run, or tasks")
            object.__setattr__(
                self,
                "tasks",
                (Task(self.script, self.lock, self.run, self.summary, scope=self.scope),),
            )

    @property
    def tables(self) -> tuple[type, ...]:
        """Its settings classes, imported now."""
        return tuple(resolve(ref) for ref in self.settings)

    @property
    def locks(self) -> tuple[str, ...]:
        return tuple(t.lock for t in self.tasks)

    @property
    def lease_patterns(self) -> tuple[str, ...]:
        """Every lease a run may take, as documented (`matview_*`, `<lock>@<hostname>`),
        once each, in task order: several tasks may share one lease."""
        return tuple(dict.fromkeys(t.lease_pattern for t in self.tasks))

    @property
    def scopes(self) -> str:
        """cluster, host, or mixed (tasks of both kinds), for listings."""
        found = {t.scope for t in self.tasks}
        return found.pop() if len(found) == 1 else "mixed"


@cache
def jobs() -> tuple[Job, ...]:
    """Every job declared in m10jobs.jobs (each flow package exposes JOB or JOBS), by
    script name."""
    import pkgutil

    import m10jobs.jobs as package

    found: list[Job] = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        declared = getattr(module, "JOBS", (getattr(module, "JOB", None),))
        found.extend(job for job in declared if isinstance(job, Job))
    return tuple(sorted(found, key=lambda j: j.script))


@cache
def sections() -> dict[str, type]:
    """Every TOML table any job declares, by name (what the config file may contain),
    and [hooks], which every job reads."""
    from m10jobs.hooks import HooksSettings

    found: dict[str, type] = {HooksSettings.SECTION: HooksSettings}
    for job in jobs():
        for cls in job.tables:
            name = cls.SECTION  # type: ignore[attr-defined]
            if found.setdefault(name, cls) is not cls:
                raise TypeError(f"[{name}] is declared twice ({job.script})")
    return found


def find(name: str) -> tuple[Job, Task | None]:
    """A job by script name (or without its m10- prefix), or a task by name."""
    for job in jobs():
        if name in (job.script, job.script.removeprefix("m10-")):
            return job, None
    for job in jobs():
        for task in job.tasks:
            if task.name == name:
                return job, task
    raise KeyError(name)


def _declaring_package(script: str) -> str | None:
    """The flow package whose __init__ declares `script`, found by reading the sources, so
    a console script (`--help`, every timer start) imports its own declaration only."""
    import m10jobs.jobs as package

    needle = f'script="{script}"'
    root = package.__path__[0]
    for name in sorted(os.listdir(root)):  # os, not pkgutil/pathlib: this is every start-up
        with (
            contextlib.suppress(OSError),
            open(os.path.join(root, name, "__init__.py"), encoding="utf-8") as init,
        ):
            if needle in init.read():
                return f"{package.__name__}.{name}"
    return None


def by_script(script: str) -> Job:
    """A console script's job, importing only its own flow package; the full scan is the
    fallback."""
    name = _declaring_package(script)
    if name is not None:
        module = importlib.import_module(name)
        for job in getattr(module, "JOBS", (getattr(module, "JOB", None),)):
            if isinstance(job, Job) and job.script == script:
                return job
    for job in jobs():
        if job.script == script:
            return job
    raise KeyError(script)
