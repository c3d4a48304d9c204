"""The one lifecycle every entry point goes through.

JSON logging with run_id -> config (the whole file validated against every
job's declared settings) -> for each task: lease -> pass (lease extended in the
background) -> release -> metrics -> exit code.  Jobs hold only
their pass; everything an operator relies on (exit codes, one-line errors,
the JSON summary on stdout, metrics) is done here, once.

A run whose every lease is live elsewhere (most timer starts on a second host)
is found in one query before the driver is imported (edges.leaseprobe) and
reported as the lease path would report it: each task skipped, exit 75.  So
psycopg, the lease and metrics edges are imported where they are used.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from m10jobs import redact, stopping
from m10jobs.config import Config, load_config
from m10jobs.errors import (
    DependencyUnavailable,
    ExitCode,
    LeaseLost,
    LockBusy,
    M10Error,
    combine_exit_codes,
)
from m10jobs.logs import new_run_id, set_context, setup_logging
from m10jobs.registry import Job, Task, sections

if TYPE_CHECKING:
    import psycopg

    from m10jobs.edges.lease import Lease
    from m10jobs.edges.metrics import Gauge
    from m10jobs.hooks import Pinger


@dataclass
class PassContext:
    """What a pass receives: its config, logger, connection and lease."""

    job: Job
    task: Task
    key: str | None
    lock: str
    config: Config
    log: logging.Logger
    run_id: str
    dry_run: bool
    params: Mapping[str, Any]
    conn: psycopg.Connection[dict[str, Any]]
    lease: Lease | None = None
    gauges: list[Gauge] = field(default_factory=list)
    on_lease: Callable[[], None] | None = None
    """Called once a lease is taken (the start ping of m10jobs.hooks)."""

    @property
    def dsn(self) -> str:
        return self.config.require("database_url")

    def gauge(self, name: str, value: float, help: str = "", **labels: str) -> None:
        from m10jobs.edges.metrics import Gauge

        self.gauges.append(Gauge(name, value, help, labels))

    def check(self) -> None:
        """A safe point (call between batches): stop here if SIGTERM/SIGINT asked us to,
        or if the lease was lost."""
        stopping.check()
        if self.lease is not None:
            self.lease.check()

    def fence(self, cur: psycopg.Cursor[Any]) -> None:
        """In the committing transaction: fail unless the lease is still ours."""
        if self.lease is not None:
            self.lease.fence(cur)


@dataclass
class TaskResult:
    task: str
    lock: str
    status: str  # ok | skipped | failed | dry-run
    exit_code: int
    duration_s: float
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    t0: float = 0.0
    """When it started (time.monotonic()), for the run history; not in the summary."""

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if v is not None and k != "t0"}
        d["duration_s"] = round(self.duration_s, 3)
        return d


_UNREACHABLE = {
    ("redis", "ConnectionError"): "Redis",
    ("redis", "TimeoutError"): "Redis",
    ("botocore", "EndpointConnectionError"): "object storage",
    ("botocore", "ConnectTimeoutError"): "object storage",
    ("botocore", "ReadTimeoutError"): "object storage",
}


def as_m10_error(exc: BaseException, dsn: str | None) -> M10Error | None:
    """Driver errors an operator can act on, as M10Errors (others: None)."""
    if isinstance(exc, M10Error):
        return exc
    psycopg = sys.modules.get("psycopg")  # not loaded: not one of its errors
    if psycopg is not None and isinstance(exc, psycopg.Error):
        from m10jobs.edges import db

        if db.is_connection_error(exc):
            return db.unavailable(dsn or "", exc)
        problem = db.protocol_problem(exc)
        if problem is not None:
            return problem
    for cls in type(exc).__mro__:
        what = _UNREACHABLE.get((cls.__module__.split(".")[0], cls.__name__))
        if what:
            return DependencyUnavailable(
                f"{what} is unreachable: {exc}; check that it is up "
                "and its URL/endpoint setting is right"
            )
    return None


def report_failure(
    exc: BaseException, dsn: str | None, log: logging.Logger, verbose: bool, what: str
) -> tuple[int, str]:
    """Log one clear line for a failure; its exit code and message."""
    known = as_m10_error(exc, dsn)
    if known is not None:
        log.error("%s", known)
        return known.exit_code, str(known)
    error = f"{what} failed: {type(exc).__name__}: {exc}"
    log.error(
        "%s",
        error + ("" if verbose else " (rerun with --verbose for the traceback)"),
        exc_info=True,
    )
    return ExitCode.FAILED, error


def describe(summary: Mapping[str, Any]) -> str:
    """A pass summary as `key=value, ...` (lists and tables as compact JSON), whole."""
    if not summary:
        return "nothing"
    return ", ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}" for k, v in summary.items()
    )


def run(
    job: Job,
    *,
    only: Task | None = None,
    config_file: str | None = None,
    flags: Mapping[str, Any] | None = None,
    dry_run: bool = False,
    verbose: bool = False,
    params: Mapping[str, Any] | None = None,
) -> int:
    run_id = new_run_id()
    log = setup_logging(job.script, run_id, verbose=verbose, fmt=(flags or {}).get("log_format"))
    started, t0 = time.time(), time.monotonic()
    results: list[TaskResult] = []
    config: Config | None = None
    gauges: list[Gauge] = []
    ping: Pinger | None = None
    error: str | None = None

    def on_stop(signo: int) -> None:
        log.warning(
            "received %s: stopping at the next safe point, then releasing the lease",
            signal.Signals(signo).name,
        )

    with stopping.handling(on_stop):
        try:
            config = load_config(config_file, flags)
            ping = _pinger(config, job, dry_run, log)
            config.check(sections)
            dsn = config.require("database_url")
            leases = [
                (task, key, lock)
                for task in ((only,) if only else job.tasks)
                for key, lock in task.instances(config)
            ]
            held = None if dry_run else _held_elsewhere(dsn, leases, job.script)
            if held is not None:  # nothing to do here: no driver, no connection
                for task, _, lock in leases:
                    if stopping.STOP.is_set():
                        break
                    results.append(_skipped(job, task, lock, held[lock], log))
            else:
                _run_tasks(
                    job,
                    leases,
                    config,
                    dsn,
                    log,
                    run_id,
                    dry_run,
                    verbose,
                    params or {},
                    results,
                    gauges,
                    ping.start if ping else None,
                )
            code = combine_exit_codes([r.exit_code for r in results])
            error = next((r.error for r in results if r.status in ("failed", "stopped")), None)
        except M10Error as exc:
            log.error("%s", exc)
            code, error = exc.exit_code, str(exc)
        signo = stopping.signum()
        if signo is not None:
            code = stopping.exit_code(signo)
            log.warning(
                "stopped by %s after %d task(s); every lease was released, nothing "
                "half-done was committed",
                signal.Signals(signo).name,
                len(results),
            )
    duration = time.monotonic() - t0
    summary = {
        "job": job.script,
        "run_id": run_id,
        "exit_code": int(code),
        "dry_run": dry_run,
        "duration_s": round(duration, 3),
        "tasks": [r.as_dict() for r in results],
    }
    print(redact.dumps(summary), flush=True)
    if config is not None and config.metrics_dir and not dry_run:
        _write_metrics(config, job, code, started, duration, results, gauges, log)
    if ping is not None:
        ping.end(int(code), error, "\n".join(f"{r.task}: {describe(r.summary)}" for r in results))
    return int(code)


def _pinger(config: Config, job: Job, dry_run: bool, log: logging.Logger) -> Pinger | None:
    """The run's ping hook when [hooks.ping_urls] names a URL for this job (m10jobs.hooks
    is imported only when it has any); a bad [hooks] table is left to config.check()."""
    table = config.file.get("hooks")
    if dry_run or not isinstance(table, dict) or not table.get("ping_urls"):
        return None
    from m10jobs import hooks

    try:
        return hooks.pinger(config.settings(hooks.HooksSettings), job.script, log)
    except M10Error:
        return None


def _held_elsewhere(
    dsn: str, leases: list[tuple[Task, str | None, str]], app: str
) -> dict[str, dict[str, Any]] | None:
    """{lease: live holder} when every lease of the run is held by another holder (what
    Lease.acquire would find for each, asked in one query without the driver), else None.

    Asked only when every lease of the run is cluster-wide: a host-local lease
    (`<lock>@<this host>`) is held only by another run on this host, which a timer never
    starts, so such a run would almost always pay the probe's connection for nothing."""
    if not leases or any(task.scope != "cluster" for task, _, _ in leases):
        return None
    locks = [lock for _, _, lock in leases]
    from m10jobs.edges import leaseprobe

    held = leaseprobe.live_holders(dsn, locks, app=app)
    return held if held is not None and all(lock in held for lock in locks) else None


def _run_tasks(
    job: Job,
    leases: list[tuple[Task, str | None, str]],
    config: Config,
    dsn: str,
    log: logging.Logger,
    run_id: str,
    dry_run: bool,
    verbose: bool,
    params: Mapping[str, Any],
    results: list[TaskResult],
    gauges: list[Gauge],
    on_lease: Callable[[], None] | None = None,
) -> None:
    """Each task in order on one connection, under its own lease (results and gauges
    grow as tasks end, so a failure to reconnect keeps what went before)."""
    from m10jobs.edges import db, schemaversion

    conn = db.connect(dsn, app=job.script)
    try:
        db.require_primary(conn, dsn)
        with db.translated(dsn):
            schemaversion.gate(conn)  # 78 before any task when this release does not fit
            if not dry_run:
                _record_host(conn, config.host, log)
        for task, key, lock in leases:
            if stopping.STOP.is_set():
                break
            if conn.closed:  # an earlier task lost it; later tasks still run
                conn = db.connect(dsn, app=job.script)
                db.require_primary(conn, dsn)
            ctx = PassContext(
                job, task, key, lock, config, log, run_id, dry_run, params, conn, on_lease=on_lease
            )
            results.append(_run_task(ctx, verbose))
            gauges.extend(ctx.gauges)
    finally:
        if results and not dry_run and RECORD_HISTORY:
            conn = _record_runs(conn, dsn, job, config.host, run_id, results, log)
        conn.close()


RECORD_HISTORY = True
"""Whether runs are recorded in m10_recovery.job_runs (always, but for the benchmark that
measures what recording costs: benchmarks/bench_history.py)."""


def _record_runs(
    conn: psycopg.Connection[dict[str, Any]],
    dsn: str,
    job: Job,
    host: str,
    run_id: str,
    results: list[TaskResult],
    log: logging.Logger,
) -> psycopg.Connection[dict[str, Any]]:
    """Every task of this run into the run history (`m10 history`), in one INSERT on the
    run's connection (a fresh one if that died).  Never the run's outcome: a database that
    refuses it is a warning, and the metrics and exit code stay the run's own.  The
    connection used (to be closed by the caller)."""
    import psycopg

    from m10jobs.edges import db
    from m10jobs.edges.queries import query

    now = time.monotonic()
    tasks = [
        {
            "task": r.task,
            "lock_name": r.lock,
            "started_ago_s": max(now - r.t0, 0.0),
            "ended_ago_s": max(now - r.t0 - r.duration_s, 0.0),
            "exit_code": r.exit_code,
            "status": r.status,
            "error": r.error,
            "summary": r.summary,
        }
        for r in results
    ]
    params = {"host": host, "job": job.script, "run_id": run_id, "tasks": redact.dumps(tasks)}
    for attempt in (1, 2):
        try:
            if conn.closed:
                conn = db.connect(dsn, app=job.script)
            # one round trip (pipeline); the commit waits for no WAL flush
            with conn.pipeline(), conn.transaction():
                conn.execute(query("history_async_commit"))
                conn.execute(query("history_record"), params)
            return conn
        except (psycopg.Error, M10Error) as exc:
            lost = isinstance(exc, psycopg.Error) and db.is_connection_error(exc)
            if attempt == 1 and lost:
                conn.close()  # the run's connection died under it: once more on a fresh one
                continue
            log.warning(
                "could not record this run in m10_recovery.job_runs (m10 history): %s",
                redact.redact(str(exc)),
            )
    return conn


def _record_host(conn: psycopg.Connection[dict[str, Any]], host: str, log: logging.Logger) -> None:
    """This host's release for `m10 status` (once per run); never a reason to fail it."""
    import psycopg

    from m10jobs.edges import schemaversion

    try:
        schemaversion.host_seen(conn, host)
    except psycopg.Error as exc:
        log.warning("could not record this host's release in m10_recovery.hosts: %s", exc)


def _skipped(
    job: Job, task: Task, lock: str, holder: dict[str, Any], log: logging.Logger
) -> TaskResult:
    """A task whose lease is held elsewhere, reported as _run_task reports LockBusy."""
    t0 = time.monotonic()
    set_context(task=task.name if len(job.tasks) > 1 else None, lock=lock)
    try:
        exc = LockBusy(lock, holder)
        _log_busy(log, exc)
    finally:
        set_context(task=None, lock=None, fencing_token=None)
    return TaskResult(
        task.name, lock, "skipped", int(ExitCode.TEMPFAIL), time.monotonic() - t0, {}, str(exc), t0
    )


def _log_busy(log: logging.Logger, exc: LockBusy) -> None:
    log.warning("%s", exc, extra={"holder": exc.holder.get("holder_id")})


def _run_task(ctx: PassContext, verbose: bool) -> TaskResult:
    set_context(task=ctx.task.name if len(ctx.job.tasks) > 1 else None, lock=ctx.lock)
    t0 = time.monotonic()
    code: int  # an ExitCode, or 128 + the signal that stopped the task
    status, code, summary, error = "ok", ExitCode.OK, {}, None
    try:
        if ctx.dry_run:
            status = "dry-run"
            with stopping.interruptible():
                summary = ctx.task.pass_fn(ctx) or {}
        else:
            summary = _run_leased(ctx)
        if ctx.dry_run:  # the details in the message too: text logs show only the message
            ctx.log.info(
                "%s would do: %s", ctx.task.name, describe(summary), extra={"summary": summary}
            )
        else:
            # its figures in the message: text logs show only the message
            ctx.log.info(
                "%s done: %s", ctx.task.name, describe(summary), extra={"summary": summary}
            )
    except LockBusy as exc:
        status, code, error = "skipped", ExitCode.TEMPFAIL, str(exc)
        _log_busy(ctx.log, exc)
    except stopping.Stopped as exc:
        status, code, error = "stopped", stopping.exit_code(exc.signum), str(exc)
        ctx.log.warning(
            "%s %s; its uncommitted work was rolled back and lease %s released",
            ctx.task.name,
            exc,
            ctx.lock,
        )
    except Exception as exc:
        status = "failed"
        summary = getattr(exc, "summary", None) or {}
        code, error = report_failure(
            exc, ctx.config.database_url, ctx.log, verbose, what=ctx.task.name
        )
    finally:
        set_context(task=None, lock=None, fencing_token=None)
    return TaskResult(
        ctx.task.name, ctx.lock, status, int(code), time.monotonic() - t0, summary, error, t0
    )


def _run_leased(ctx: PassContext) -> dict[str, Any]:
    from m10jobs.edges import db
    from m10jobs.edges.lease import Lease, holder_id

    # An operator's explicit setting wins; else the job's own default; else the global one.
    explicit = ctx.config.origins["lease_ttl_seconds"] != "default"
    ttl = (
        ctx.config.lease_ttl_seconds
        if explicit
        else ctx.job.ttl_seconds or ctx.config.lease_ttl_seconds
    )
    lease = Lease(ctx.dsn, ctx.conn, ctx.lock, holder_id(ctx.run_id, ctx.config.host), ttl, ctx.log)
    with lease:
        ctx.lease = lease
        set_context(fencing_token=lease.token)
        ctx.log.info("lease %s acquired", ctx.lock)
        if ctx.on_lease is not None:
            ctx.on_lease()
        try:
            with db.translated(ctx.dsn), stopping.interruptible():
                stopping.check()
                return ctx.task.pass_fn(ctx) or {}
        except LeaseLost:
            raise  # the pass said it itself, with its own detail
        except stopping.Stopped:
            raise  # asked to stop: the lease is released on the way out
        except BaseException as exc:
            # Losing the lease interrupts the pass; whatever that interruption looked
            # like (KeyboardInterrupt, a query cut off mid-flight), the cause is the lease.
            # A failure the heartbeat has not explained yet is checked with the database.
            if lease.lost.is_set() or (isinstance(exc, Exception) and not lease.confirm()):
                raise LeaseLost(f"{lease.lost_reason}; the pass was stopped") from None
            raise


def _write_metrics(
    config: Config,
    job: Job,
    code: int,
    started: float,
    duration: float,
    results: list[TaskResult],
    gauges: list[Gauge],
    log: logging.Logger,
) -> None:
    from m10jobs.edges.metrics import Gauge, write_job_metrics

    per_task = [
        Gauge(
            "m10_task_last_exit_code",
            r.exit_code,
            "Exit code of each task's last run.",
            {"task": r.task, "lock": r.lock},
        )
        for r in results
    ]
    try:
        write_job_metrics(
            config.metrics_dir,
            job.script,
            exit_code=code,
            started=started,
            duration=duration,
            succeeded=code == 0,
            gauges=[*per_task, *gauges],
        )
    except OSError as exc:
        log.warning("could not write metrics to %s: %s", config.metrics_dir, exc)
