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
This module only gathers and renders: the checks are each flow's own
(m10jobs/jobs/<flow>/health.py, named on its Job), the engines' and the jobs
table's are in m10jobs/health/, systemd is read by m10jobs/edges/systemd.py.
Multi-host: run it on each host for host-local state (metrics, files).
"""

from __future__ import annotations

import json
import time
import typing
from collections.abc import Iterator
from typing import Any

import click

from m10jobs.cli.adminkit import admin_command
from m10jobs.cli.table import table as aligned
from m10jobs.errors import ExitCode
from m10jobs.health import SECTIONS, STATEMENT_TIMEOUT_MS, Check, Status, human, iso

CORE_CHECKS = ("m10jobs.health.engines:checks",)
"""Checks of no flow, run after the flows' own."""


def all_checks() -> Iterator[Check]:
    """Every declared check: by section, then the jobs' (registry order), then the core's."""
    from m10jobs.registry import jobs, resolve

    refs = [job.checks for job in jobs() if job.checks] + list(CORE_CHECKS)
    found: list[Check] = [
        check for ref in dict.fromkeys(refs) for check in resolve(typing.cast(Any, ref))
    ]
    for section in SECTIONS:
        yield from (c for c in found if c.section == section)


def collect(config: Any, now: float | None = None) -> Status:
    """Everything the screen shows; a failing source becomes a red line, not a crash."""
    from m10jobs.edges import conninfo, db
    from m10jobs.edges.queries import query
    from m10jobs.edges.schemaversion import SchemaMismatch
    from m10jobs.errors import ConfigError, M10Error
    from m10jobs.health.engines import check_config
    from m10jobs.health.runs import check_jobs, last_runs
    from m10jobs.health.schema import check_schema

    st = Status(config.host, time.time() if now is None else now)
    config_valid = check_config(st, config)
    dsn = config.require("database_url")
    conn = None
    try:
        # Behind a transaction-pooling PgBouncer the session settings below must not stay
        # with the pooled server session: one transaction, rolled back on close, undoes them.
        # (connect checks the schema first: adminkit)
        conn = db.connect(dsn, app="m10 status", autocommit=not conninfo.transaction_pooled())
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
    leases = history = None
    try:
        if conn is not None:
            with db.translated(dsn):
                leases = conn.execute(query("status_leases")).fetchall()
                check_schema(st, conn, leases)
                history = last_runs(conn, config.host)
        check_jobs(st, config, leases, history)
        for check in all_checks():
            if check.database and conn is None:
                continue
            try:
                with db.translated(dsn):
                    check.fn(st, config, conn)
            except ConfigError:
                if config_valid:
                    raise
                # its settings are invalid: config-invalid's red line already says so
    finally:
        if conn is not None:
            conn.close()
    return st


def render(st: Status) -> list[str]:
    """The screen (red and green only on a terminal: click.echo strips the colour else)."""
    lines = [
        f"m10 status on {st.host} at {iso(st.now)}  "
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
    lines += aligned(table)
    ob, dl = st.pipeline.get("outbox"), st.pipeline.get("dead_letters")
    lines += ["", "PIPELINE"]
    if ob is None or dl is None:
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
    rd, pg = st.redis, st.postgres
    lines += ["", "ENGINES"]
    if pg:
        lines.append(
            f"  postgresql    {pg['role']} at {pg['server']}, timeline {pg['timeline'] or '-'}, "
            f"PostgreSQL {pg['version']}, up {human(pg['up_s'])}"
        )
    lines.append(
        f"  redis         {rd['address']}: {rd['role']} (Redis {rd['version']}), "
        f"{rd['persistence']}, {rd['replicas']} replica(s)"
        if "role" in rd
        else f"  redis         {rd.get('server', '-')}: unreachable"
    )
    if rd.get("note"):
        lines.append(f"                note: {rd['note']}")
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
