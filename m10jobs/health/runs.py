"""The jobs table of `m10 status`: each job's last run and exit code (this host's
metrics files, else systemd), the failed run's own error line (the run history,
m10_recovery.job_runs), its next timer, and its lease rows, matched to jobs by the
registry's one matcher (`registry.owner`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from m10jobs.errors import ExitCode, exit_meaning
from m10jobs.health import JobRow, Status, human

INTERVALS_BEFORE_LATE = 3
"""A job is late when its last normal run is this many schedule intervals old."""

STUCK_SLACK_S = 30
"""After its unit's timeout a pass has this long to release its lease (SIGTERM, then the
release) before its lease counts as stuck."""

GC_JOB = "m10-maintenance"
"""Whose reclaim_gc task deletes lapsed leases: an expired lease is red only once one of
its intervals has passed since the expiry (before that, the next pass reclaims it)."""


def stuck_after(timeout_s: float, interval_s: float, ttl_s: float) -> float:
    """How long a lease may be held before it is red as stuck: one of the job's intervals
    (the next timer start found it held, so a run was missed), but never before its unit's
    timeout has ended the pass (plus a moment to release), and for a job of long intervals
    no later than its timeout plus one TTL (a pass cannot last longer)."""
    return max(timeout_s + STUCK_SLACK_S, min(interval_s, timeout_s + ttl_s))


def last_runs(conn: Any, host: str) -> dict[str, dict[str, Any]]:
    """Each job's last run recorded by this host in the run history: {job: {"run_id",
    "exit_code" (the worst of its tasks), "errors": [task: error line of each failed
    task]}}."""
    from m10jobs.edges.queries import query
    from m10jobs.errors import combine_exit_codes
    from m10jobs.registry import jobs

    rows = conn.execute(
        query("history_last_runs"), {"jobs": [j.script for j in jobs()], "host": host}
    ).fetchall()
    found: dict[str, dict[str, Any]] = {}
    for r in rows:  # newest first per job: the first row names the job's last run
        run = found.setdefault(r["job"], {"run_id": r["run_id"], "codes": [], "errors": []})
        if r["run_id"] != run["run_id"]:
            continue
        run["codes"].append(r["exit_code"])
        if r["exit_code"] not in (ExitCode.OK, ExitCode.TEMPFAIL) and r["error"]:
            task = "" if r["task"] == r["job"] else f"{r['task']}: "  # a job of one task
            run["errors"].insert(0, task + r["error"])
    for run in found.values():
        run["exit_code"] = int(combine_exit_codes(run.pop("codes")))
    return found


def schedule_seconds(schedule: str) -> int:
    """Rough interval of the OnCalendar= forms the registry uses (for "late" only)."""
    named = {"minutely": 60, "hourly": 3600, "daily": 86400, "weekly": 7 * 86400}
    if schedule in named:
        return named[schedule]
    m = re.fullmatch(r"\*:(\d+)/(\d+)(:\d+)?", schedule)
    if m:
        return int(m.group(2)) * 60
    if re.fullmatch(r"\*:\*(:\d+)?", schedule):
        return 60
    if re.fullmatch(r"\*:\d+(:\d+)?", schedule):
        return 3600
    return 86400


def _job_metrics(metrics_dir: Path | None, script: str) -> dict[str, float] | None:
    from m10jobs.edges.metrics import metrics_path, parse

    if metrics_dir is None:
        return None
    try:
        text = metrics_path(metrics_dir, script).read_text()
    except OSError:
        return None
    return {g.name: g.value for g in parse(text) if not g.labels}


def check_jobs(
    st: Status,
    config: Any,
    leases: list[dict[str, Any]] | None,
    history: dict[str, dict[str, Any]] | None = None,
) -> None:
    """A row per job (last run, exit, next timer, its leases); red lines for a failed or
    late job (with the failed run's own error line when the run history has it) and for
    an expired or stuck lease.  `leases`: the lease rows, `history`: last_runs() (None
    when the database is down)."""
    from m10jobs.edges import systemd
    from m10jobs.registry import by_script, jobs, owner

    registered = jobs()
    gc_grace = schedule_seconds(by_script(GC_JOB).schedule)
    units = systemd.services([f"{j.script}.service" for j in registered])
    timers = systemd.timers([f"{j.script}.timer" for j in registered])
    owners = {lease["lock_name"]: owner(lease["lock_name"]) for lease in leases or ()}
    for job in registered:
        row = JobRow(job.script)
        metrics = _job_metrics(config.metrics_dir, job.script)
        service = units.get(f"{job.script}.service", {})
        if metrics and "m10_job_last_run_timestamp_seconds" in metrics:
            row.source = "metrics"
            row.last_run = metrics["m10_job_last_run_timestamp_seconds"]
            row.exit_code = int(metrics.get("m10_job_last_exit_code", -1))
            row.last_ok = metrics.get("m10_job_last_success_timestamp_seconds")
        elif systemd.timestamp(service.get("ExecMainExitTimestamp")) is not None:
            row.source = "systemd"
            row.last_run = systemd.timestamp(service.get("ExecMainExitTimestamp"))
            row.exit_code = int(service.get("ExecMainStatus") or 0)
        if row.exit_code is not None:
            row.meaning = exit_meaning(row.exit_code)
            # 75 (another host holds the lease) is a normal run, whatever the metric counts.
            if row.exit_code in (ExitCode.OK, ExitCode.TEMPFAIL):
                row.last_ok = max(row.last_ok or 0, row.last_run or 0) or None
        if f"{job.script}.timer" in timers:
            nxt = timers[f"{job.script}.timer"]
            row.next_elapse = "in " + human(nxt - st.now) if nxt else "not scheduled"
        st.jobs.append(row)

        if row.exit_code is not None and row.exit_code not in (ExitCode.OK, ExitCode.TEMPFAIL):
            # the history's last run of this host is this failure when it failed too (a run
            # that failed before it could record, e.g. PostgreSQL down, leaves a success last)
            run = (history or {}).get(job.script)
            if run is not None and run["exit_code"] not in (ExitCode.OK, ExitCode.TEMPFAIL):
                row.error = "; ".join(run["errors"]) or None
            st.red(
                "job-failed",
                f"{job.script} last exited {row.exit_code} ({row.meaning}) "
                f"{human(st.now - (row.last_run or st.now))} ago"
                + (f": {row.error}" if row.error else ""),
                f"journalctl -u {job.script}.service -n 50 -o cat; then "
                f"m10 run {job.script} --verbose",
            )
        late_after = INTERVALS_BEFORE_LATE * schedule_seconds(job.schedule) + job.timeout_seconds
        if row.last_run is not None and st.now - row.last_run > late_after:
            st.red(
                "job-late",
                f"{job.script} last ran {human(st.now - row.last_run)} ago "
                f"(schedule {job.schedule}; late after {human(late_after)})",
                f"systemctl status {job.script}.timer; systemctl enable --now {job.script}.timer",
            )
        if leases is None:
            continue
        ttl = job.ttl_seconds or config.lease_ttl_seconds
        limit = stuck_after(job.timeout_seconds, schedule_seconds(job.schedule), ttl)
        for lease in leases:
            found = owners[lease["lock_name"]]
            if found is not None and found[0] is job:
                _check_lease(st, row, lease, limit, gc_grace)
    for lease in leases or ():
        if owners[lease["lock_name"]] is None:  # no job declares it (a removed job's row)
            _check_lease(st, None, lease, 4 * config.lease_ttl_seconds, gc_grace)


def _check_lease(
    st: Status, row: JobRow | None, lease: dict[str, Any], stuck_after: float, gc_grace: float
) -> None:
    name, holder = lease["lock_name"], lease["holder_id"]
    if lease["expires_in_s"] <= 0:
        ago = -lease["expires_in_s"]
        state = f"expired {human(ago)} ago"
        if ago <= gc_grace:  # the next reclaim_gc frees it: not an operator's matter yet
            state += f", reclaimed within {human(gc_grace - ago)}"
        else:
            st.red(
                "lease-expired",
                f"lease {name} of {holder} expired {human(ago)} ago and was not reclaimed "
                f"(reclaim_gc runs every {human(gc_grace)})",
                "m10 run reclaim_gc   (is m10-maintenance.timer running?)",
            )
    else:
        state = f"held {human(lease['age_s'])}"
        if lease["age_s"] > stuck_after:
            st.red(
                "lease-stuck",
                f"lease {name} held by {holder} for {human(lease['age_s'])} "
                f"(a pass ends within {human(stuck_after)}): its holder looks stuck",
                f"check {holder.split(':')[0]} runs PID {_pid(holder)}; if it is gone: "
                f"m10 locks release {name} --force",
            )
    text = f"{name} {holder} ({state})"
    if row is not None:
        row.leases.append(text)


def _pid(holder: str) -> str:
    parts = holder.split(":")
    return parts[1] if len(parts) > 2 else "?"
