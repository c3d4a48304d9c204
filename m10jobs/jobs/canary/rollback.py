"""m10-rollback: act at most once on a fresh failing canary report (seed: rollback automation).

Reads this host's latest_report.json (validated by m10jobs.jobs.canary.report, exit
65 when it is corrupt, truncated or of an unknown schema) and acts only when
its verdict is `fail` and it is fresh.  Acting = running the configured command
(argv, no shell, with a timeout, only the environment it is configured to get).

Host-local lease (m10:rollback@<host>: the report is this host's file), cluster-
wide decision: the claim is a row in m10_recovery.rollback_actions, inserted in
a transaction fenced by this host's lease, ON CONFLICT (report_run_id) DO
NOTHING, and refused while the newest claim anywhere is younger than
`cooldown_seconds`.  So one failing verdict is one rollback whichever hosts see
it, and a persistently failing canary does not roll back every report.  A
claimed report (done, failed, or interrupted by a crash) is never acted on
again: a failed rollback is not blindly repeated.  With no command configured
the pass warns and does nothing (exit 0), so the shipped config keeps the unit
green.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any

from m10jobs import stopping
from m10jobs.edges import db
from m10jobs.edges.queries import query
from m10jobs.errors import BadInput, LeaseLost, M10Error, TaskFailed
from m10jobs.jobs.canary import report as cr
from m10jobs.jobs.canary.settings import RollbackSettings
from m10jobs.redact import redact
from m10jobs.stopping import Stopped

if TYPE_CHECKING:
    from pathlib import Path

    from m10jobs.config import Config
    from m10jobs.runner import PassContext

MAX_CLOCK_SKEW_S = 300
OUTPUT_TAIL = 2000
KILL_GRACE_S = 5
UNCONFIGURED = "rollback.command is not configured (nor rollback.set_flags): nothing to do"
# What every command gets; anything else only through rollback.env / rollback.pass_env.
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


def settings(config: Config) -> RollbackSettings:
    return config.settings(RollbackSettings)


def command_env(
    s: RollbackSettings,
    report: cr.Report,
    report_path: Path,
    source: dict[str, str] | os._Environ[str] = os.environ,
) -> dict[str, str]:
    """Only what the command is configured to get: a minimal base, the pass_env names
    present in the job's environment, the literal env table, and the report's facts."""
    return {
        **BASE_ENV,
        **{k: source[k] for k in s.pass_env if k in source},
        **s.env,
        "M10_CANARY_REPORT": str(report_path),
        "M10_CANARY_RUN_ID": report.run_id,
        "M10_CANARY_VERDICT": report.verdict,
    }


def decide(
    report: cr.Report | None, s: RollbackSettings, latest: Path, now: float
) -> tuple[bool, str, str]:
    """(act?, decision, reason) from the report alone (the ledger decides under its lock);
    `now` is the database clock, the one m10-canary stamps its reports with."""
    if report is None:
        return False, "no_report", f"no canary report at {latest} yet"
    if report.verdict != "fail":
        return (
            False,
            f"verdict_{report.verdict}",
            (f"report {report.run_id} verdict is {report.verdict}; rollback acts on fail only"),
        )
    age = now - report.finished_at.timestamp()
    if age < -MAX_CLOCK_SKEW_S:
        raise BadInput(
            f"canary report {latest} finished {-age:.0f}s in the future; nothing "
            "was acted on. Check the clocks of the canary and rollback hosts"
        )
    if age > s.max_report_age_s:
        return (
            False,
            "stale",
            (
                f"report {report.run_id} (fail) is {age:.0f}s old, older than "
                f"max_report_age_s {s.max_report_age_s:g}; not acting on it"
            ),
        )
    return True, "act", f"report {report.run_id} is a fresh fail ({age:.0f}s old)"


def _already(row: dict[str, Any]) -> str:
    if row["outcome"] is None:
        return (
            f"a rollback for this report started at {row['started_at']:%Y-%m-%dT%H:%M:%S%z} "
            f"on {row['host']} and never finished (killed?); not repeating it: check the "
            "deployment and run the command by hand if needed"
        )
    return (
        f"already acted on at {row['started_at']:%Y-%m-%dT%H:%M:%S%z} on {row['host']}: "
        f"{row['outcome']} (exit status {row['exit_status']}); not repeating it"
    )


def _cooling(latest: dict[str, Any] | None, s: RollbackSettings) -> str | None:
    """Why the cooldown holds us back, or None."""
    if latest is None or latest["age_s"] >= s.cooldown_seconds:
        return None
    return (
        f"the last rollback (report {latest['report_run_id']} on {latest['host']}, "
        f"{latest['outcome'] or 'running'}) started {latest['age_s']:.0f}s ago, within "
        f"rollback.cooldown_seconds {s.cooldown_seconds}; not rolling back again yet"
    )


def _blocked(conn: Any, report_run_id: str, s: RollbackSettings) -> tuple[str, str] | None:
    """(decision, reason) when the ledger says not to act on this report."""
    row = conn.execute(query("rollback_action"), {"report_run_id": report_run_id}).fetchone()
    if row is not None:
        return "already_acted", _already(row)
    cooling = _cooling(conn.execute(query("rollback_latest")).fetchone(), s)
    return ("cooldown", cooling) if cooling else None


def _run_command(
    argv: list[str], timeout: float, env: dict[str, str]
) -> tuple[str, int | None, str, bool]:
    """(outcome, exit status, output tail, interrupted).

    The command runs in its own session so a timeout kills its whole process
    group.  An interrupt (the lease heartbeat reporting a lost lease, Ctrl-C)
    does not abandon a half-done rollback: it is waited for (within its
    timeout) so its outcome can be recorded, and `interrupted` says so.
    """
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
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
            return "timeout", proc.returncode, _tail(out), interrupted
    text = _tail(out)
    return ("succeeded" if proc.returncode == 0 else "failed"), proc.returncode, text, interrupted


def _tail(out: bytes) -> str:
    """The output's tail, redacted whole before it is cut: a cut must not leave half
    a secret the mask no longer recognises (the command may echo its env, a DSN)."""
    return redact(out.decode(errors="replace"))[-OUTPUT_TAIL:]


def _flag_action(report_run_id: str) -> str:
    return f"rollback:{report_run_id}"


def _apply_flags(ctx: PassContext, report_run_id: str, set_flags: dict[str, Any]) -> bool:
    """Write a claim's flags into this host's flags file, once (the file records the
    action id with the values), then stamp the claim; False when they were there already."""
    from m10jobs import flags

    done = flags.update(
        ctx.config.state_dir,
        set_flags,
        who=f"m10-rollback@{ctx.config.host}",
        reason=f"canary report {report_run_id} verdict fail",
        source="m10-rollback",
        action=_flag_action(report_run_id),
        at=db.now(ctx.conn),
    )
    ctx.conn.execute(query("rollback_flags_applied"), {"report_run_id": report_run_id})
    if done is not None:
        ctx.log.warning(
            "feature flags set for report %s: %s",
            report_run_id,
            ", ".join(f"{c.name}={json.dumps(c.value)}" for c in done),
        )
    return done is not None


def _resume_flags(ctx: PassContext, s: RollbackSettings) -> list[str]:
    """Finish the flag writes of this host's claims whose claimer was killed before
    stamping them (idempotent: a write that happened is not repeated)."""
    resumed = []
    pending = ctx.conn.execute(query("rollback_flags_pending"), {"host": ctx.config.host})
    for row in pending.fetchall():
        if row["age_s"] > s.max_report_age_s:
            ctx.log.warning(
                "the flags of report %s (claimed %.0fs ago, killed before they were "
                "written?) are older than max_report_age_s; not applied: set them by hand "
                "(m10 flags set) if they are still wanted",
                row["report_run_id"],
                row["age_s"],
            )
            continue
        if _apply_flags(ctx, row["report_run_id"], row["set_flags"]):
            resumed.append(row["report_run_id"])
    return resumed


def rollback_pass(ctx: PassContext) -> dict[str, Any]:
    s = settings(ctx.config)
    resumed = {"flags_resumed": _resume_flags(ctx, s)} if not ctx.dry_run else {}
    if not resumed.get("flags_resumed"):
        resumed = {}
    if not s.command and not s.set_flags:
        ctx.log.warning("%s", UNCONFIGURED)
        ctx.gauge("m10_rollback_acted", 0, "1 when the last pass ran the rollback command.")
        return {"decision": "unconfigured", "reason": UNCONFIGURED, **resumed}
    latest = cr.latest_path(ctx.config.state_dir)
    report = cr.load(latest)
    act, decision, reason = decide(report, s, latest, db.now(ctx.conn).timestamp())
    summary: dict[str, Any] = {
        "report": str(latest),
        "decision": decision,
        "reason": reason,
        **resumed,
    }
    if report is not None:
        summary["report_run_id"] = report.run_id
    if act:
        assert report is not None
        blocked = _blocked(ctx.conn, report.run_id, s)
        if blocked:
            act, (decision, reason) = False, blocked
    if act and not ctx.dry_run:
        assert report is not None and ctx.lease is not None
        with ctx.conn.transaction(), ctx.conn.cursor() as cur:
            cur.execute(query("rollback_lock_ledger"))
            ctx.fence(cur)
            claimed = cur.execute(
                query("rollback_claim"),
                {
                    "report_run_id": report.run_id,
                    "host": ctx.config.host,
                    "lock": ctx.lock,
                    "holder": ctx.lease.holder,
                    "token": ctx.lease.token,
                    "run_id": ctx.run_id,
                    "command": redact(json.dumps(s.command)),
                    "verdict": report.verdict,
                    "set_flags": json.dumps(s.set_flags) if s.set_flags else None,
                    "cooldown_s": s.cooldown_seconds,
                },
            ).fetchone()
            if claimed is None:  # another host claimed it, or another report, meanwhile
                act, (decision, reason) = (
                    False,
                    _blocked(cur, report.run_id, s)
                    or ("already_acted", "claimed by another holder a moment ago"),
                )
    if not act:
        (ctx.log.warning if decision == "cooldown" else ctx.log.info)("nothing to do: %s", reason)
        ctx.gauge("m10_rollback_acted", 0, "1 when the last pass ran the rollback command.")
        ctx.gauge(
            "m10_rollback_cooldown_active",
            int(decision == "cooldown"),
            "1 when the last pass did not act on a fresh failing report (cooldown).",
        )
        return {**summary, "decision": decision, "reason": reason}
    assert report is not None
    if ctx.dry_run:
        ctx.log.info(
            "would set flags %s and run the rollback command %s: %s",
            s.set_flags,
            s.command,
            reason,
        )
        return {**summary, "decision": "would_act", "command": s.command, "flags": s.set_flags}
    flags_error = None
    if s.set_flags:
        try:
            _apply_flags(ctx, report.run_id, dict(s.set_flags))
        except M10Error as exc:  # the command still runs; the next pass retries the flags
            flags_error = str(exc)
            ctx.log.error("feature flags for report %s not written: %s", report.run_id, exc)
    if not s.command:  # flags alone: the claim's outcome is theirs
        _record_outcome(ctx, report.run_id, "succeeded", None, 0.0)
        ctx.gauge("m10_rollback_acted", 1, "1 when the last pass ran the rollback command.")
        ctx.gauge(
            "m10_rollback_cooldown_active",
            0,
            "1 when the last pass did not act on a fresh failing report (cooldown).",
        )
        if flags_error:
            raise TaskFailed(
                f"feature flags for report {report.run_id} not written ({flags_error}); "
                "the next m10-rollback pass retries them"
            )
        return {**summary, "decision": "acted", "flags": s.set_flags}

    history = cr.history_path(ctx.config.state_dir, report.run_id)
    env = command_env(s, report, history if history.exists() else latest)
    ctx.log.warning("running the rollback command %s: %s", s.command, reason)
    t0 = time.monotonic()
    outcome, status, output, interrupted = _run_command(list(s.command), s.timeout_s, env)
    duration = round(time.monotonic() - t0, 3)
    _record_outcome(ctx, report.run_id, outcome, status, duration)
    ctx.gauge("m10_rollback_acted", 1, "1 when the last pass ran the rollback command.")
    ctx.gauge(
        "m10_rollback_cooldown_active",
        0,
        "1 when the last pass did not act on a fresh failing report (cooldown).",
    )
    where = "recorded in m10_recovery.rollback_actions"
    if interrupted:
        ctx.log.error("rollback command output (tail): %s", output.strip())

        if stopping.signum() is not None:
            raise Stopped(stopping.signum() or 15)  # recorded above; the runner says the rest
        raise LeaseLost(
            f"interrupted while the rollback command ran (lease lost?); the command "
            f"was let finish: {outcome} (exit status {status}), {where}; it will "
            f"not be repeated for report {report.run_id}"
        )
    result = {
        **summary,
        "decision": "acted",
        "outcome": outcome,
        "exit_status": status,
        "duration_s": duration,
        **({"flags": s.set_flags} if s.set_flags else {}),
    }
    if flags_error and outcome == "succeeded":
        raise TaskFailed(
            f"rollback command succeeded but feature flags for report {report.run_id} "
            f"were not written ({flags_error}); the next m10-rollback pass retries them"
        )
    if outcome != "succeeded":
        ctx.log.error("rollback command output (tail): %s", output.strip())
        what = {
            "timeout": f"timed out after {s.timeout_s:g}s and was killed",
            "error": "could not be started",
            "failed": f"exited {status}",
        }[outcome]
        raise TaskFailed(
            f"rollback command {s.command[0]} {what} for report {report.run_id}; "
            f"{where}, it will not be repeated for this report: check the "
            "deployment and roll back by hand"
        )
    ctx.log.info("rollback command succeeded in %ss; output (tail): %s", duration, output.strip())
    return result


def _record_outcome(
    ctx: PassContext, report_run_id: str, outcome: str, status: int | None, duration: float
) -> None:
    """Write the outcome, over a fresh connection if the pass's own died meanwhile."""
    args = {
        "report_run_id": report_run_id,
        "run_id": ctx.run_id,
        "outcome": outcome,
        "exit_status": status,
        "duration_s": duration,
    }
    try:
        ctx.conn.execute(query("rollback_finish"), args)
    except Exception:
        with db.connect(ctx.dsn, app=ctx.job.script) as conn:
            conn.execute(query("rollback_finish"), args)
