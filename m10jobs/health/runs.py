"""The jobs table of `m10 status`: each job's last run and exit code (this host's
metrics files, else systemd), its next timer, and its lease rows, matched to jobs by the
registry's one matcher (`registry.owner`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from m10jobs.errors import ExitCode, exit_meaning
from m10jobs.health import JobRow, Status, human

INTERVALS_BEFORE_LATE = 3
"""A job is late when its last normal run is this many schedule intervals old."""


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


def check_jobs(st: Status, config: Any, leases: list[dict[str, Any]] | None) -> None:
    """A row per job (last run, exit, next timer, its leases); red lines for a failed or
    late job and for an expired or stuck lease.  `leases`: the lease rows (None when the
    database is down)."""
    from m10jobs.edges import systemd
    from m10jobs.registry import jobs, owner

    registered = jobs()
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
            st.red(
                "job-failed",
                f"{job.script} last exited {row.exit_code} ({row.meaning}) "
                f"{human(st.now - (row.last_run or st.now))} ago",
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
        stuck_after = job.timeout_seconds + 2 * ttl
        for lease in leases:
            found = owners[lease["lock_name"]]
            if found is not None and found[0] is job:
                _check_lease(st, row, lease, stuck_after)
    for lease in leases or ():
        if owners[lease["lock_name"]] is None:  # no job declares it (a removed job's row)
            _check_lease(st, None, lease, 4 * config.lease_ttl_seconds)


def _check_lease(st: Status, row: JobRow | None, lease: dict[str, Any], stuck_after: float) -> None:
    name, holder = lease["lock_name"], lease["holder_id"]
    if lease["expires_in_s"] <= 0:
        state = f"expired {human(-lease['expires_in_s'])} ago"
        st.red(
            "lease-expired",
            f"lease {name} of {holder} expired "
            f"{human(-lease['expires_in_s'])} ago and was not reclaimed",
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
