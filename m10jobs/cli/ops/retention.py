"""`m10 retention`: what the retention_cleanup task archived and deleted."""

from __future__ import annotations

import json
from typing import Any

import click

from m10jobs.cli.adminkit import CONTEXT, admin_command
from m10jobs.errors import ExitCode


@click.group("retention", context_settings=CONTEXT)
def COMMAND() -> None:
    """Retention runs (m10_recovery.retention_jobs).

    \b
    Example:
      m10 retention history --policy replay_log
    """


@admin_command(COMMAND, "history", help="Recent retention_jobs rows, newest first.")
@click.option("--policy", help="Only this policy (replay_log, outbox, stats_csv, ...).")
@click.option("--limit", type=click.IntRange(1, 10000), default=30, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
def history(config: Any, log: Any, policy: str | None, limit: int, as_json: bool) -> int:
    from m10jobs.cli.ops.deadletters import print_table
    from m10jobs.edges import db
    from m10jobs.edges.queries import query

    dsn = config.require("database_url")
    with db.connect(dsn, app="m10 retention history") as conn, db.translated(dsn):
        rows = conn.execute(query("retention_history"),
                            {"policy": policy, "limit": limit}).fetchall()
    if as_json:
        for r in rows:
            click.echo(json.dumps(r, default=str))
    elif not rows:
        click.echo("no retention runs recorded")
    else:
        print_table(rows, [("ID", "id"), ("RUN", "run_id"), ("POLICY", "policy"),
                           ("STATUS", "status"), ("CUTOFF", "cutoff"),
                           ("ARCHIVED", "rows_archived"), ("DELETED", "rows_deleted"),
                           ("MS", "duration_ms"), ("STARTED", "started_at"),
                           ("ARCHIVE", "archive_location"), ("ERROR", "error")])
    return ExitCode.OK
