"""`m10 status`: the operator's one screen, and a health check (exit 0 all well, 1 act now).

It only reads: no lease, no write, a read-only database session with a
statement timeout, so it is safe on any host at any time.  What it sees:

- jobs: last run, exit code and age from this host's metrics files
  (`$M10_METRICS_DIR/m10_<job>.prom`), else from systemd (`ExecMainStatus`);
  the next timer elapse where systemd runs; the lease rows of each job.
- pipeline (cluster-wide, PostgreSQL): outbox backlog, held-back aggregates,
  dead letters by outcome, last publish in replay_log.
- artifacts (this host's files): newest stats day and its marker, the canary
  report, pending fallback uploads; cost hours missing (PostgreSQL).

Each problem is one red line naming what is wrong and the command that fixes
it; docs/runbook.md has a section per check id (a test keeps them in step).
Multi-host: run it on each host for host-local state (metrics, files).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from m10jobs.cli.adminkit import admin_command
from m10jobs.errors import ExitCode, exit_meaning

STATEMENT_TIMEOUT_MS = 5000
SYSTEMCTL_TIMEOUT_S = 3.0
INTERVALS_BEFORE_LATE = 3
"""A job is late when its last normal run is this many schedule intervals old."""
DL_RECONCILE_LATE_S = 3600
COST_GRACE_S = 900
"""An hour counts as missing once it ended this long ago (timer jitter + one pass)."""
FALLBACK_LATE_S = 1800
"""A fallback upload is red once it waited two retry intervals."""


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


@dataclass
class Status:
    host: str
    now: float
    jobs: list[JobRow] = field(default_factory=list)
    pipeline: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    redis: dict[str, Any] = field(default_factory=dict)
    schema: dict[str, Any] = field(default_factory=dict)
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
            "time": _iso(self.now),
            "ok": not self.problems,
            "jobs": [asdict(j) for j in self.jobs],
            "pipeline": self.pipeline,
            "artifacts": self.artifacts,
            "redis": self.redis,
            "schema": self.schema,
            "problems": [{**asdict(p), "runbook": p.runbook} for p in self.problems],
        }


# --- formatting -------------------------------------------------------------------------


def _iso(ts: float | None) -> str | None:
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


# --- systemd --------------------------------------------------------------------------


def systemd_present() -> bool:
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


SYSTEMD_PROPS = ("Id", "ExecMainStatus", "ExecMainExitTimestamp")
"""Of each service; `--timestamp=unix` formats the timestamp as @seconds (systemd >= 251)."""


def parse_systemctl_show(text: str) -> dict[str, dict[str, str]]:
    """`systemctl show -p ... UNIT...` output (blocks separated by blank lines) by unit Id."""
    units: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n\s*\n", text.strip()):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if props.get("Id"):
            units[props["Id"]] = props
    return units


def systemd_timestamp(value: str | None) -> float | None:
    """`@1764419700` (--timestamp=unix) as seconds; empty/0/unparsable: None."""
    if value and value.startswith("@"):
        try:
            ts = float(value[1:])
        except ValueError:
            return None
        return ts or None
    return None


def _systemctl(*args: str) -> str:
    try:
        return subprocess.run(
            ["systemctl", "--no-pager", *args],
            capture_output=True,
            text=True,
            timeout=SYSTEMCTL_TIMEOUT_S,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def systemd_services(names: Sequence[str]) -> dict[str, dict[str, str]]:
    """Last exit status and time of each service, by unit name ({} without systemd)."""
    if not names or not systemd_present():
        return {}
    return parse_systemctl_show(
        _systemctl("show", "--timestamp=unix", *(f"-p{p}" for p in SYSTEMD_PROPS), "--", *names)
    )


def parse_list_timers(text: str) -> dict[str, float | None]:
    """`systemctl list-timers --output=json`: next elapse (Unix seconds) by timer unit.
    (NextElapseUSecRealtime in `systemctl show` ignores --timestamp before systemd 258.)"""
    try:
        timers = json.loads(text or "[]")
    except ValueError:
        return {}
    return {
        t["unit"]: (t["next"] / 1e6 if t.get("next") else None)
        for t in timers
        if isinstance(t, dict) and "unit" in t
    }


def systemd_timers(patterns: Sequence[str]) -> dict[str, float | None]:
    if not systemd_present():
        return {}
    return parse_list_timers(_systemctl("list-timers", "--all", "--output=json", "--", *patterns))


# --- jobs -------------------------------------------------------------------------------


def _job_metrics(metrics_dir: Path | None, script: str) -> dict[str, float] | None:
    from m10jobs.edges.metrics import metrics_path, parse

    if metrics_dir is None:
        return None
    try:
        text = metrics_path(metrics_dir, script).read_text()
    except OSError:
        return None
    return {g.name: g.value for g in parse(text) if not g.labels}


def _lock_matches(template: str, name: str) -> bool:
    """A lease row belongs to a task lock: same name, a `{key}` instance, or a
    host-suffixed name (host-local flows), shown as it is in the table."""
    prefix = template.split("{", 1)[0]
    if "{" in template:
        return name.startswith(prefix)
    return name == template or (
        name.startswith(template)
        and not name[len(template)].isalnum()
        and name[len(template)] != "_"
    )


def check_jobs(st: Status, config: Any, leases: list[dict[str, Any]] | None) -> None:
    from m10jobs.registry import jobs

    registered = jobs()
    units = systemd_services([f"{j.script}.service" for j in registered])
    timers = systemd_timers([f"{j.script}.timer" for j in registered])
    claimed: set[str] = set()
    for job in registered:
        row = JobRow(job.script)
        metrics = _job_metrics(config.metrics_dir, job.script)
        service = units.get(f"{job.script}.service", {})
        if metrics and "m10_job_last_run_timestamp_seconds" in metrics:
            row.source = "metrics"
            row.last_run = metrics["m10_job_last_run_timestamp_seconds"]
            row.exit_code = int(metrics.get("m10_job_last_exit_code", -1))
            row.last_ok = metrics.get("m10_job_last_success_timestamp_seconds")
        elif systemd_timestamp(service.get("ExecMainExitTimestamp")) is not None:
            row.source = "systemd"
            row.last_run = systemd_timestamp(service.get("ExecMainExitTimestamp"))
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
            if not any(_lock_matches(t.lock, lease["lock_name"]) for t in job.tasks):
                continue
            claimed.add(lease["lock_name"])
            _check_lease(st, row, lease, stuck_after)
    for lease in leases or ():
        if lease["lock_name"] not in claimed:
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


# --- pipeline ---------------------------------------------------------------------------


def check_pipeline(st: Status, config: Any, conn: Any) -> None:
    from m10jobs.edges.queries import query
    from m10jobs.jobs.maintenance.settings import MaintenanceSettings

    stale_after = config.settings(MaintenanceSettings).outbox_stale_seconds
    ob = conn.execute(query("status_outbox")).fetchone()
    st.pipeline["outbox"] = ob
    if ob["pending"] and (ob["oldest_pending_age_s"] or 0) > stale_after:
        last = ob["last_publish_age_s"]
        st.red(
            "outbox-backlog",
            f"outbox backlog: {ob['pending']} pending, oldest "
            f"{human(ob['oldest_pending_age_s'])} (> outbox_stale_seconds "
            f"{stale_after}); last publish {human(last) + ' ago' if last else 'never'}",
            "m10 outbox status; journalctl -u m10-outbox-processor.service -n 50 -o cat",
        )
    dl = conn.execute(query("status_dead_letters")).fetchone()
    st.pipeline["dead_letters"] = dl
    if dl["abandoned"]:
        st.red(
            "dl-abandoned",
            f"{dl['abandoned']} dead letter(s) abandoned by dl_reconcile "
            f"(first id {dl['first_abandoned_id']}): nobody replayed or discarded them yet",
            "m10 dl list --outcome abandoned; fix the cause, then m10 dl replay ID (or "
            "--outcome abandoned), or settle one that cannot be replayed with "
            "m10 dl discard ID --reason TEXT",
        )
    if dl["pending"] and (dl["oldest_pending_age_s"] or 0) > DL_RECONCILE_LATE_S:
        st.red(
            "dl-unreconciled",
            f"{dl['pending']} dead letter(s) wait for reconcile, oldest "
            f"{human(dl['oldest_pending_age_s'])}",
            "m10 run dl_reconcile --verbose",
        )


def check_cost(st: Status, config: Any, conn: Any) -> None:
    from m10jobs.edges.queries import query
    from m10jobs.jobs.cost.settings import CostSettings

    window = config.settings(CostSettings).backfill_max_hours
    cost = conn.execute(
        query("status_cost_hours"), {"window_hours": window, "grace_s": COST_GRACE_S}
    ).fetchone()
    st.artifacts["cost"] = {**cost, "window_hours": window}
    if cost["never_ran"]:
        st.red("cost-gap", "no hourly cost snapshot yet", "aos-cost-snapshot-hourly")
    elif cost["hours_missing"]:
        st.red(
            "cost-gap",
            f"{cost['hours_missing']} hourly cost period(s) missing in the last "
            f"{window} h: {cost['first_missing_hour']:%Y-%m-%d %H:00} .. "
            f"{cost['last_missing_hour']:%Y-%m-%d %H:00} UTC (newest done "
            f"{cost['last_hour']:%Y-%m-%d %H:00})",
            "aos-cost-snapshot-hourly   (backfills every missing hour of the window)",
        )


# --- host-local artifacts -------------------------------------------------------------


def check_stats(st: Status, config: Any) -> None:
    from m10jobs.cli.ops.postflight import stats_today
    from m10jobs.errors import BadInput
    from m10jobs.jobs.stats.statsfile import (
        marker_mismatches,
        marker_path,
        month_files,
        parse,
        read_marker,
    )

    log_dir = Path(config.log_dir)
    files = month_files(log_dir)
    yesterday = stats_today(config) - timedelta(days=1)
    info: dict[str, Any] = {"dir": str(log_dir), "newest_day": None, "marker": None}
    st.artifacts["daily_stats"] = info
    elsewhere = st.elsewhere("m10-daily-stats", _run_records(config))
    if elsewhere:
        info["elsewhere"] = elsewhere
    if not files:
        if not elsewhere:
            st.red("stats-stale", f"no m10_stats_YYYY-MM.csv in {log_dir}", "m10-daily-stats")
        return
    newest = files[-1]
    info["file"] = newest.name
    try:
        stats = parse(newest)
        marker = read_marker(newest)
    except BadInput as exc:
        info["marker"] = "unreadable"
        st.red(
            "stats-corrupt",
            str(exc),
            f"restore {newest.name} from object storage (m10/stats/), or move it away and "
            f"run m10-daily-stats --start-date {newest.name[10:17]}-01",
        )
        return
    info["newest_day"] = stats.last_date.isoformat() if stats.last_date else None
    mismatches = marker_mismatches(stats, marker)
    info["marker"] = "; ".join(mismatches) or "matches"
    if mismatches:
        st.red(
            "stats-marker",
            f"{newest.name}: {'; '.join(mismatches)}",
            f"rm {marker_path(newest)}; m10-daily-stats",
        )
    if (stats.last_date is None or stats.last_date < yesterday) and not elsewhere:
        st.red(
            "stats-stale",
            f"newest stats day is {info['newest_day']}, expected yesterday ({yesterday})",
            "m10-daily-stats   (backfills every missing day)",
        )


def check_canary(st: Status, config: Any) -> None:
    from m10jobs.errors import BadInput
    from m10jobs.jobs.canary import report as cr
    from m10jobs.jobs.canary.settings import RollbackSettings

    path = cr.latest_path(config.state_dir)
    max_age = config.settings(RollbackSettings).max_report_age_s
    info: dict[str, Any] = {"report": str(path)}
    st.artifacts["canary"] = info
    elsewhere = st.elsewhere("m10-canary", _run_records(config))
    if elsewhere:
        info["elsewhere"] = elsewhere
    try:
        report = cr.load(path)
    except BadInput as exc:
        info["verdict"] = "unreadable"
        st.red(
            "canary-stale",
            f"canary report unreadable: {exc}",
            "m10-canary   (writes a fresh report)",
        )
        return
    if report is None:
        info["verdict"] = None
        if not elsewhere:
            st.red("canary-stale", f"no canary report at {path}", "m10-canary")
        return
    age = st.now - report.finished_at.timestamp()
    info.update(
        verdict=report.verdict, score=report.score, age_s=round(age, 1), run_id=report.run_id
    )
    if age > max_age and not elsewhere:
        st.red(
            "canary-stale",
            f"canary report is {human(age)} old (> rollback "
            f"max_report_age_s {max_age:g}): rollback will not act on it",
            "systemctl status m10-canary.timer; m10-canary",
        )
    if report.verdict in ("fail", "inconclusive"):
        st.red(
            "canary-failing",
            f"canary verdict {report.verdict} (score {report.score})",
            "m10 canary status   (failing probes, and what rollback did)",
        )


def _run_records(config: Any) -> bool:
    """Whether this host records its runs (metrics files or systemd): only then does
    "no record of a job" mean it has not run here."""
    return bool(config.metrics_dir) or systemd_present()


def check_uploads(st: Status, config: Any) -> None:
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


# --- the command ----------------------------------------------------------------------


def check_redis(st: Status, config: Any) -> None:
    """The Redis the outbox writes to: role, persistence, replicas (and a red line when
    it is unreachable or not the primary)."""
    from m10jobs.edges import streams
    from m10jobs.errors import M10Error

    url = config.redis_url
    st.redis = {"server": streams.describe(url)}
    try:
        client = streams.client(url, timeout=STATEMENT_TIMEOUT_MS / 1000)
        with streams.translated(url):
            info = streams.server_info(client)
            where = streams.address(client)
    except M10Error as exc:
        st.red("redis", str(exc), "check Redis (and its Sentinels) and M10_REDIS_URL")
        return
    st.redis |= {
        "role": info.role,
        "address": where,
        "version": info.version,
        "persistence": info.persistence(),
        "durable": info.durable,
        "replicas": info.replicas,
    }
    if info.role != "master":
        st.red(
            "redis",
            f"Redis at {st.redis['server']} is a replica: the outbox cannot write to it",
            "point M10_REDIS_URL at the primary, or use redis+sentinel://",
        )


HOST_SEEN_WITHIN_S = 86400
"""A host that recorded its release within this long counts as running (m10 status)."""


def check_schema(st: Status, conn: Any, leases: list[dict[str, Any]] | None) -> None:
    """The schema version, each host's release, and the hosts it leaves behind (red): a
    host seen in the last day whose release would refuse the schema."""
    from m10jobs import release
    from m10jobs.edges.queries import query

    rows = conn.execute(query("status_schema_migrations")).fetchall()
    hosts = conn.execute(query("status_hosts")).fetchall()
    version = release.number(rows[-1]["version"]) if rows else None
    st.schema = {
        "version": version,
        "release": release.VERSION,
        "runs_on": release.schema_range(),
        "hosts": [
            {k: h[k] for k in ("host", "release", "requires", "knows", "age_s")} for h in hosts
        ],
    }
    for h in hosts:
        if h["age_s"] > HOST_SEEN_WITHIN_S:
            continue
        newer = [
            release.Newer(r["version"], r["compatible_with"], r["release"])
            for r in rows
            if release.number(r["version"]) > h["knows"]
        ]
        why = release.refusal(
            version, newer, version=h["release"], requires=h["requires"], known=h["knows"]
        )
        if why:
            st.red(
                "host-release",
                f"host {h['host']} runs m10jobs {h['release']}, older than the schema "
                f"at {version} wants ({why})",
                f"install m10jobs {release.VERSION} on {h['host']} (make install), "
                "see CHANGELOG.md",
            )
    # releases before 0.2.0 record nothing: a lease holder without a row is one of them
    # (listed, not red: a planted or stale lease row would make it a false alarm)
    recorded = {h["host"] for h in hosts}
    st.schema["unrecorded"] = sorted(
        {r["holder_id"].split(":", 1)[0] for r in leases or []} - recorded
    )


def collect(config: Any, now: float | None = None) -> Status:
    """Everything the screen shows; a failing source becomes a red line, not a crash."""
    from m10jobs.edges import db
    from m10jobs.edges.queries import query
    from m10jobs.edges.schemaversion import SchemaMismatch
    from m10jobs.errors import M10Error

    st = Status(config.host, time.time() if now is None else now)
    dsn = config.require("database_url")
    conn = None
    try:
        conn = db.connect(dsn, app="m10 status")  # checks the schema first (adminkit)
        with db.translated(dsn):
            conn.execute(query("status_session"), {"ms": str(STATEMENT_TIMEOUT_MS)})
    except SchemaMismatch as exc:  # nothing of the database is read: this host's files are
        st.refused = True
        st.red(
            "schema",
            str(exc),
            "m10 db migrate" if "m10 db migrate" in str(exc) else "install the release named",
        )
    except M10Error as exc:
        st.red("database", str(exc), "check PostgreSQL and M10_DATABASE_URL")
    leases = None
    try:
        if conn is not None:
            with db.translated(dsn):
                leases = conn.execute(query("status_leases")).fetchall()
        check_jobs(st, config, leases)
        steps: list[Callable[[], None]] = [
            lambda: check_stats(st, config),
            lambda: check_canary(st, config),
            lambda: check_uploads(st, config),
            lambda: check_redis(st, config),
        ]
        if conn is not None:
            steps[:0] = [
                lambda: check_schema(st, conn, leases),
                lambda: check_pipeline(st, config, conn),
                lambda: check_cost(st, config, conn),
            ]
        for step in steps:
            with db.translated(dsn):
                step()
    finally:
        if conn is not None:
            conn.close()
    return st


def render(st: Status) -> list[str]:
    """The screen (red and green only on a terminal: click.echo strips the colour else)."""
    lines = [
        f"m10 status on {st.host} at {_iso(st.now)}  "
        "(jobs and files: this host; database: cluster-wide)",
        "",
    ]
    header = ("JOB", "LAST RUN", "EXIT", "NEXT", "LEASE")
    table = [header]
    for j in st.jobs:
        last = (
            f"{human(st.now - j.last_run)} ago"
            if j.last_run is not None
            else "never"
            if j.source == "none"
            else "-"
        )
        code = f"{j.exit_code} {j.meaning}" if j.exit_code is not None else "-"
        table.append((j.job, last, code, j.next_elapse, "; ".join(j.leases) or "-"))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    ob, dl = st.pipeline.get("outbox"), st.pipeline.get("dead_letters")
    lines += ["", "PIPELINE"]
    if ob is None:
        lines.append("  (database unreachable)")
    else:
        lines += [
            f"  outbox        {ob['pending']} pending ({ob['retrying']} retrying), oldest "
            f"{human(ob['oldest_pending_age_s'])}; {ob['held_back_aggregates']} held-back "
            f"aggregate(s); {ob['dead_lettered']} dead-lettered event(s)",
            "  replay_log    last publish "
            + (
                f"{human(ob['last_publish_age_s'])} ago"
                if ob["last_publish_age_s"] is not None
                else "never"
            ),
            f"  dead letters  {dl['pending']} awaiting reconcile, {dl['abandoned']} abandoned; "
            f"last 24 h: {dl['replayed_24h']} replayed, {dl['already_processed_24h']} "
            f"already processed, {dl['discarded_24h']} discarded",
        ]
    rd = st.redis
    lines += ["", "ENGINES"]
    lines.append(
        f"  redis         {rd['address']}: {rd['role']} (Redis {rd['version']}), "
        f"{rd['persistence']}, {rd['replicas']} replica(s)"
        if "role" in rd
        else f"  redis         {rd.get('server', '-')}: unreachable"
    )
    sc = st.schema
    if sc:
        lines += [
            "",
            "SCHEMA",
            f"  database      at {sc['version']}; this release {sc['release']} runs on "
            f"{sc['runs_on']}",
            "  hosts         "
            + (
                ", ".join(
                    f"{h['host']} {h['release']} ({human(h['age_s'])} ago)" for h in sc["hosts"]
                )
                or "none recorded"
            ),
        ]
        if sc.get("unrecorded"):
            lines.append(
                f"  unrecorded    {', '.join(sc['unrecorded'])} (holding a lease, no release "
                "recorded: m10jobs before 0.2.0)"
            )
    a = st.artifacts
    stats, canary, up, cost = (
        a.get(k, {}) for k in ("daily_stats", "canary", "fallback_uploads", "cost")
    )
    lines += [
        "",
        "ARTIFACTS",
        f"  daily stats   newest day {stats.get('newest_day') or '-'}"
        f"{' in ' + stats['file'] if stats.get('file') else ''}; marker "
        f"{stats.get('marker') or '-'}"
        + (f" ({stats['elsewhere']})" if stats.get("elsewhere") else ""),
        f"  canary        verdict {canary.get('verdict') or '-'}"
        + (
            f" (score {canary['score']}), report {human(canary['age_s'])} old"
            if "age_s" in canary
            else ""
        )
        + (f" ({canary['elsewhere']})" if canary.get("elsewhere") else ""),
        f"  uploads       {up.get('pending', 0)} fallback upload(s) pending"
        + (f", oldest {human(up['oldest_age_s'])}" if up.get("oldest_age_s") else ""),
    ]
    if cost:
        newest = cost["last_hour"]
        lines.append(
            f"  cost          {cost['hours_missing']} hour(s) missing in the last "
            f"{cost['window_hours']} h; newest hour "
            f"{newest.strftime('%Y-%m-%d %H:00') if newest else '-'}"
        )
    lines.append("")
    if not st.problems:
        lines.append(click.style("OK: nothing needs action", fg="green"))
        return lines
    lines.append(click.style(f"NEEDS ACTION ({len(st.problems)})", fg="red", bold=True))
    for p in st.problems:
        lines += [
            click.style(f"  RED {p.check}: {p.message}", fg="red"),
            f"      fix: {p.fix}",
            f"      see: {p.runbook}",
        ]
    return lines


@admin_command(
    None,
    "status",
    help="One screen: every job's last run, exit code, next timer and lease; the "
    "outbox, dead letters, stats, canary, uploads and cost.  Each problem is "
    "a red line with the command that fixes it.  Reads only (no lease).  "
    "Exit 0 when all is well, 1 when anything needs action, 78 when this release does "
    "not fit the database's schema.",
    short_help="Everything on one screen; exit 1 when anything needs action.",
    epilog="\b\nExamples:\n  m10 status\n  m10 status --json | jq .problems",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document (for machines).")
def status(config: Any, log: Any, as_json: bool) -> int:
    st = collect(config)
    if as_json:
        click.echo(json.dumps(st.as_dict(), default=str, indent=2))
    else:
        click.echo("\n".join(render(st)))
    for p in st.problems:
        log.debug("needs action: %s: %s", p.check, p.message)
    if st.refused:  # the one line, as every command says it
        log.error("%s", next(p.message for p in st.problems if p.check == "schema"))
        return ExitCode.CONFIG
    return ExitCode.FAILED if st.problems else ExitCode.OK


COMMAND = status
