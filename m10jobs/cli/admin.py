"""`m10`: the operator's admin group (migrate, inspect and release locks, run a job).

Every subcommand shares the jobs' contract: --config/--verbose, JSON logs on
stderr, one clear line and a sysexits code on failure.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from typing import Any

import click

from m10jobs.cli import Group, quiet_on_closed_pipe, version_option
from m10jobs.cli.adminkit import CONTEXT, admin_command, operator
from m10jobs.cli.jobcommand import job_command
from m10jobs.cli.table import table as aligned
from m10jobs.errors import ExitCode

# Subcommands that must keep root when an operator runs them as root.
KEEP_ROOT = frozenset({"units"})


class AdminGroup(Group):
    """`m10`: every subcommand's output into a closed pipe ends quietly (SIGPIPE)."""

    def invoke(self, ctx: click.Context) -> Any:
        with quiet_on_closed_pipe():
            return super().invoke(ctx)


@click.group(cls=AdminGroup, context_settings=CONTEXT)
@version_option()
@click.pass_context
def main(ctx: click.Context) -> None:
    """m10jobs admin: migrations, leases, and running any job by hand.

    Run as root on an installed host, every subcommand reads /etc/m10jobs/env
    and runs as the m10jobs user, like the units (`units` keeps root).

    \b
    Examples:
      m10 status
      m10 db migrate
      m10 db schema --check
      m10 locks list
      m10 locks release m10:outbox_processor --force
      m10 run maintenance --dry-run
    """
    from m10jobs.cli import service_identity

    service_identity.adopt(drop=ctx.invoked_subcommand not in KEEP_ROOT)


@main.group(context_settings=CONTEXT)
def db() -> None:
    """Database schema."""


@admin_command(
    db, "migrate", check_schema=False, help="Apply pending sql/migrations in order (re-runnable)."
)
@click.option("--dry-run", is_flag=True, help="List pending migrations, apply nothing.")
def db_migrate(config: Any, log: Any, dry_run: bool) -> int:
    from m10jobs.edges import db as pg
    from m10jobs.edges.migrate import migrate

    dsn = config.require("database_url")
    with pg.connect(dsn, app="m10 db migrate") as conn, pg.translated(dsn):
        versions = migrate(conn, dry_run=dry_run)
    verb = "would apply" if dry_run else "applied"
    log.info("%s %d migration(s)", verb, len(versions), extra={"versions": versions})
    click.echo(f"{verb}: {', '.join(versions)}" if versions else "schema is up to date")
    return ExitCode.OK


@admin_command(
    db,
    "status",
    check_schema=False,
    help="The database's schema version, pending migrations, and whether this release "
    "runs on it.  Exit 0 when it does, 78 when it refuses (the line says what to do).",
    epilog="\b\nExample:\n  m10 db status",
)
def db_status(config: Any, log: Any) -> int:
    from m10jobs import release
    from m10jobs.edges import db as pg
    from m10jobs.edges import schemaversion
    from m10jobs.edges.migrate import available
    from m10jobs.edges.queries import query

    dsn = config.require("database_url")
    with pg.connect(dsn, app="m10 db status") as conn, pg.translated(dsn):
        state = schemaversion.read(conn)
        rows = (
            conn.execute(query("status_schema_migrations")).fetchall()
            if state.version is not None
            else []
        )
    applied = {r["version"] for r in rows}
    pending = [m.version for m in available() if m.version not in applied]
    newer = [r for r in rows if release.number(r["version"]) > release.knows()]
    click.echo(f"schema        {'at ' + state.version if state.version else 'not migrated'}")
    click.echo(f"this release  {release.VERSION} runs on {release.schema_range()}")
    click.echo(
        f"pending       {len(pending)}: {', '.join(pending)} (run `m10 db migrate`)"
        if pending
        else "pending       none"
    )
    for r in newer:
        marks = (
            "every release keeps working"
            if r["compatible_with"] == release.EVERY_RELEASE
            else f"releases {r['compatible_with']} and later keep working"
            if r["compatible_with"]
            else "older releases refuse it"
        )
        click.echo(f"newer         {r['version']} (applied by {r['release'] or '?'}; {marks})")
    why = state.refusal()
    click.echo(f"verdict       {why or 'this release runs on it'}")
    log.info("schema %s", state.version, extra={"pending": pending, "refused": bool(why)})
    return ExitCode.CONFIG if why else ExitCode.OK


@admin_command(db, "schema", help="Print the database's schema as sql/schema.sql has it.")
@click.option(
    "--check", is_flag=True, help="Compare with sql/schema.sql instead; exit 1 when they differ."
)
def db_schema(config: Any, log: Any, check: bool) -> int:
    import difflib

    from m10jobs.edges.migrate import SCHEMA_FILE, dump_schema

    live = dump_schema(config.require("database_url"))
    if not check:
        click.echo(live, nl=False)
        return ExitCode.OK
    diff = list(
        difflib.unified_diff(
            SCHEMA_FILE.read_text().splitlines(),
            live.splitlines(),
            "sql/schema.sql",
            "database",
            lineterm="",
            n=1,
        )
    )
    if diff:
        click.echo("\n".join(diff))
        log.error(
            "the database's schema differs from sql/schema.sql (diff on stdout); "
            "run `m10 db migrate`, or look for changes made by hand"
        )
        return ExitCode.FAILED
    click.echo("schema matches sql/schema.sql")
    return ExitCode.OK


@main.group(context_settings=CONTEXT)
def locks() -> None:
    """Leases in m10_recovery.distributed_locks."""


@admin_command(locks, "list", help="Every lease: scope, holder, token, acquired, expires, age.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per lease.")
def locks_list(config: Any, log: Any, as_json: bool) -> int:
    from m10jobs.edges import db as pg
    from m10jobs.edges.queries import query
    from m10jobs.registry import scope_of

    dsn = config.require("database_url")
    with pg.connect(dsn, app="m10 locks list") as conn, pg.translated(dsn):
        rows = conn.execute(query("list_locks")).fetchall()
    for r in rows:
        r["scope"] = scope_of(r["lock_name"]) or "unknown"
    if as_json:
        for r in rows:
            click.echo(json.dumps(r, default=str))
        return ExitCode.OK
    if not rows:
        click.echo("no leases held")
        return ExitCode.OK
    header = ("LOCK", "SCOPE", "HOLDER", "TOKEN", "ACQUIRED", "EXPIRES", "AGE", "STATE")
    table = [header] + [
        (
            r["lock_name"],
            r["scope"],
            r["holder_id"],
            str(r["fencing_token"]),
            r["acquired_at"].isoformat(timespec="seconds"),
            r["expires_at"].isoformat(timespec="seconds"),
            f"{r['age_s']:.0f}s",
            "orphaned" if r["orphaned"] else "live" if r["expires_in_s"] > 0 else "expired",
        )
        for r in rows
    ]
    click.echo("\n".join(aligned(table)))
    return ExitCode.OK


@admin_command(locks, "release", help="Remove a lease whoever holds it (recovery only).")
@click.argument("name")
@click.option("--force", is_flag=True, help="Required: the holder may still be running.")
def locks_release(config: Any, log: Any, name: str, force: bool) -> int:
    from m10jobs.edges import db as pg
    from m10jobs.edges.queries import query

    if not force:
        raise click.UsageError(
            f"refusing to release {name} without --force: its holder may "
            "still be running; check `m10 locks list` first"
        )
    dsn = config.require("database_url")
    with pg.connect(dsn, app="m10 locks release") as conn, pg.translated(dsn):
        try:
            row = conn.execute(query("force_release_lock"), {"name": name}).fetchone()
        except pg.LockNotAvailable:
            click.echo(
                f"{name}: its holder is committing right now (the lease row is locked "
                "by its fenced transaction); nothing released, retry in a few seconds",
                err=True,
            )
            return ExitCode.TEMPFAIL
    who = operator()
    if row is None:
        log.info("lock %s was not held; nothing to release", name, extra={"operator": who})
        click.echo(f"{name}: not held")
        return ExitCode.OK
    log.warning(
        "lock %s force-released by %s; it was held by %s with token %s",
        name,
        who,
        row["holder_id"],
        row["fencing_token"],
        extra={
            "lock": name,
            "operator": who,
            "holder": row["holder_id"],
            "fencing_token": row["fencing_token"],
        },
    )
    click.echo(f"{name}: released (was {row['holder_id']}, token {row['fencing_token']})")
    return ExitCode.OK


class RunGroup(Group):
    """`m10 run JOB|TASK [OPTIONS]`: any job, or one task of the orchestrator, by hand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from m10jobs.registry import jobs

        names = []
        for job in jobs():
            names.append(job.script)
            if len(job.tasks) > 1:
                names += [t.name for t in job.tasks]
        return names

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        from m10jobs.registry import find

        try:
            job, task = find(cmd_name)
        except KeyError:
            return None
        return job_command(job, only=task, name=cmd_name)


main.add_command(
    RunGroup("run", help="Run one job (or one maintenance task) now.", context_settings=CONTEXT)
)


@main.command(context_settings=CONTEXT)
def jobs() -> None:
    """The job registry: script, scope (cluster/host), lease(s), schedule, tasks."""
    from m10jobs.registry import jobs as registered

    rows = [("SCRIPT", "SCOPE", "LEASES", "SCHEDULE", "TASKS")] + [
        (
            job.script,
            job.scopes,
            ", ".join(dict.fromkeys(t.lease_pattern for t in job.tasks)),
            job.schedule,
            ", ".join(t.name for t in job.tasks) if len(job.tasks) > 1 else "-",
        )
        for job in registered()
    ]
    click.echo("\n".join(aligned(rows)))


def _add_ops_groups() -> None:
    """Each module in m10jobs/cli/ops/ contributes one `m10 <group>` (COMMAND)."""
    import m10jobs.cli.ops as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        main.add_command(module.COMMAND)


_add_ops_groups()

if __name__ == "__main__":
    main()
