"""m10-rollback: act at most once on a fresh failing canary report (seed: rollback automation).

Reads latest_report.json (validated by m10jobs.canary_report, exit 65 when it
is corrupt, truncated or of an unknown schema) and acts only when its verdict
is `fail` and it is fresh.  Acting = running the configured command (argv, no
shell, with a timeout, the report path in M10_CANARY_REPORT).

At most once per report: the claim is an fsync'ed "started" line in the
append-only log rollback_actions.jsonl, appended under that log's file lock
after checking no line names the report yet.  The outcome follows as a
"finished" line.  A report already claimed (done, failed, or interrupted by a
crash) is never acted on again: a failed rollback is not blindly repeated.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from m10jobs import canary_report as cr
from m10jobs.errors import BadInput, ConfigError, LeaseLost, TaskFailed
from m10jobs.registry import Flow, Job
from m10jobs.settings import setting
from m10jobs.stopping import Stopped

if TYPE_CHECKING:
    from m10jobs.config import Config
    from m10jobs.runner import PassContext

MAX_CLOCK_SKEW_S = 300
OUTPUT_TAIL = 2000
KILL_GRACE_S = 5


@dataclass(frozen=True)
class RollbackSettings:
    """[rollback]: what to run on a fresh failing report; required before m10-rollback
    can act, so the whole table is optional for every other job."""

    SECTION: ClassVar[str] = "rollback"

    command: tuple[str, ...] = setting(
        (), "argv run without a shell (required for m10-rollback to run)",
        example=["/usr/local/bin/rollback-deploy", "--to", "previous"])
    timeout_s: float = setting(300.0, "the command is killed after this long", min=0.001,
                               max=600)
    max_report_age_s: float = setting(900.0, "an older report is not acted on", min=1.0)


def settings(config: Config) -> RollbackSettings:
    s = config.settings(RollbackSettings)
    if not s.command:
        raise ConfigError(f"config key rollback.command is not set (in {config.source}); "
                          "e.g. command = [\"/usr/local/bin/deploy\", \"rollback\"] (argv, run "
                          "without a shell)")
    return s


def read_actions(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Log records by report run_id.  A torn last line (crash mid-append, before the
    command could run) is ignored; any other unreadable line is BadInput."""
    from m10jobs.edges import files

    data = files.read_bytes(path, files.ACTIONS_LOG, missing_ok=True)
    if data is None:
        return {}
    lines = data.split(b"\n")
    by_report: dict[str, list[dict[str, Any]]] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            run_id = rec["report_run_id"]
        except (ValueError, TypeError, KeyError):
            if n == len(lines):  # no newline after it: torn by a crash mid-append
                continue
            raise BadInput(f"rollback log {path} line {n} is not a valid record; nothing was "
                           "acted on. Repair or move the line (the log is append-only)") from None
        by_report.setdefault(str(run_id), []).append(rec)
    return by_report


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _record(path: Path, **fields: Any) -> None:
    from m10jobs.edges.files import append_line

    append_line(path, json.dumps({"at": _now_iso(), **fields}, sort_keys=True))


def decide(report: cr.Report | None, s: RollbackSettings, latest: Path) -> tuple[bool, str, str]:
    """(act?, decision, reason) from the report alone (the log is checked under its lock)."""
    if report is None:
        return False, "no_report", f"no canary report at {latest} yet"
    if report.verdict != "fail":
        return False, f"verdict_{report.verdict}", (
            f"report {report.run_id} verdict is {report.verdict}; rollback acts on fail only")
    age = time.time() - report.finished_at.timestamp()
    if age < -MAX_CLOCK_SKEW_S:
        raise BadInput(f"canary report {latest} finished {-age:.0f}s in the future; nothing "
                       "was acted on. Check the clocks of the canary and rollback hosts")
    if age > s.max_report_age_s:
        return False, "stale", (f"report {report.run_id} (fail) is {age:.0f}s old, older than "
                                f"max_report_age_s {s.max_report_age_s:g}; not acting on it")
    return True, "act", f"report {report.run_id} is a fresh fail ({age:.0f}s old)"


def _already(records: list[dict[str, Any]]) -> str:
    last = records[-1]
    if last.get("event") == "started":
        return (f"a rollback for this report started at {last.get('at')} and never finished "
                "(killed?); not repeating it: check the deployment and run the command by hand "
                "if needed")
    return (f"already acted on at {last.get('at')}: {last.get('outcome')} "
            f"(exit status {last.get('exit_status')}); not repeating it")


def _run_command(argv: list[str], timeout: float, env: dict[str, str]
                 ) -> tuple[str, int | None, str, bool]:
    """(outcome, exit status, output tail, interrupted).

    The command runs in its own session so a timeout kills its whole process
    group.  An interrupt (the lease heartbeat reporting a lost lease, Ctrl-C)
    does not abandon a half-done rollback: it is waited for (within its
    timeout) so its outcome can be recorded, and `interrupted` says so.
    """
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    except OSError as exc:
        return "error", None, f"cannot start {argv[0]}: {exc.strerror or exc}", False
    deadline = time.monotonic() + timeout
    interrupted = False
    while True:
        try:
            out, _ = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
            break
        except KeyboardInterrupt as exc:
            interrupted = True
            if isinstance(exc, Stopped) and proc.poll() is None:
                # systemctl stop signals the unit's whole cgroup; do the same for the
                # command's own session, then record how it ended.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, exc.signum)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
            return ("timeout", proc.returncode, out.decode(errors="replace")[-OUTPUT_TAIL:],
                    interrupted)
    text = out.decode(errors="replace")[-OUTPUT_TAIL:]
    return ("succeeded" if proc.returncode == 0 else "failed"), proc.returncode, text, interrupted


def rollback_pass(ctx: PassContext) -> dict[str, Any]:
    from m10jobs.edges.files import file_lock

    s = settings(ctx.config)
    latest = cr.latest_path(ctx.config.state_dir)
    log_path = cr.actions_log_path(ctx.config.state_dir)
    report = cr.load(latest)
    act, decision, reason = decide(report, s, latest)
    summary: dict[str, Any] = {"report": str(latest), "decision": decision, "reason": reason}
    if report is not None:
        summary["report_run_id"] = report.run_id
    if act:
        assert report is not None
        previous = read_actions(log_path).get(report.run_id)
        if previous:
            act, decision, reason = False, "already_acted", _already(previous)
    if not act:
        ctx.log.info("nothing to do: %s", reason)
        ctx.gauge("m10_rollback_acted", 0, "1 when the last pass ran the rollback command.")
        return {**summary, "decision": decision, "reason": reason}
    assert report is not None
    if ctx.dry_run:
        ctx.log.info("would run the rollback command %s: %s", s.command, reason)
        return {**summary, "decision": "would_act", "command": s.command}

    with file_lock(log_path):  # check and claim atomically against any other rollback
        previous = read_actions(log_path).get(report.run_id)
        if previous:
            reason = _already(previous)
            ctx.log.info("nothing to do: %s", reason)
            return {**summary, "decision": "already_acted", "reason": reason}
        ctx.check()
        _record(log_path, event="started", report_run_id=report.run_id, command=s.command,
                host=socket.gethostname(), rollback_run_id=ctx.run_id,
                fencing_token=ctx.lease.token if ctx.lease else None)
    history = cr.history_path(ctx.config.state_dir, report.run_id)
    env = {**os.environ, "M10_CANARY_REPORT": str(history if history.exists() else latest),
           "M10_CANARY_RUN_ID": report.run_id, "M10_CANARY_VERDICT": report.verdict}
    ctx.log.warning("running the rollback command %s: %s", s.command, reason)
    t0 = time.monotonic()
    outcome, status, output, interrupted = _run_command(list(s.command), s.timeout_s, env)
    duration = round(time.monotonic() - t0, 3)
    with file_lock(log_path):
        _record(log_path, event="finished", report_run_id=report.run_id, outcome=outcome,
                exit_status=status, duration_s=duration, rollback_run_id=ctx.run_id)
    ctx.gauge("m10_rollback_acted", 1, "1 when the last pass ran the rollback command.")
    if interrupted:
        ctx.log.error("rollback command output (tail): %s", output.strip())
        from m10jobs import stopping

        if stopping.signum() is not None:
            raise Stopped(stopping.signum() or 15)  # recorded above; the runner says the rest
        raise LeaseLost(f"interrupted while the rollback command ran (lease lost?); the command "
                        f"was let finish: {outcome} (exit status {status}), recorded in "
                        f"{log_path}; it will not be repeated for report {report.run_id}")
    result = {**summary, "decision": "acted", "outcome": outcome, "exit_status": status,
              "duration_s": duration}
    if outcome != "succeeded":
        ctx.log.error("rollback command output (tail): %s", output.strip())
        what = {"timeout": f"timed out after {s.timeout_s:g}s and was killed",
                "error": "could not be started", "failed": f"exited {status}"}[outcome]
        raise TaskFailed(f"rollback command {s.command[0]} {what} for report {report.run_id}; "
                         f"recorded in {log_path}, it will not be repeated for this report: "
                         "check the deployment and roll back by hand")
    ctx.log.info("rollback command succeeded in %ss; output (tail): %s", duration,
                 output.strip())
    return result


JOB = Job(
    script="m10-rollback",
    lock="m10:rollback",
    run=rollback_pass,
    summary="Roll back once when the latest canary report is a fresh fail.",
    example="m10-rollback --dry-run",
    schedule="*:1/5",
    after=("postgresql.service", "m10-canary.service"),
    produces=(
        Flow("file", cr.ACTIONS_LOG, f"$M10_STATE_DIR/canary/reports/{cr.ACTIONS_LOG}",
             "Append-only log of the reports rollback acted on (started, then outcome)"),
    ),
    consumes=(f"$M10_STATE_DIR/canary/reports/{cr.LATEST}",),
    timeout_seconds=720,
    ttl_seconds=900,  # above the pass timeout: the lease outlives the longest rollback
    settings=(RollbackSettings,),
)
