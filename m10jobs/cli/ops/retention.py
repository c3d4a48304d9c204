"""`m10 retention`: what the retention_cleanup task archived and deleted."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from m10jobs.cli import Group
from m10jobs.cli.adminkit import CONTEXT, admin_command
from m10jobs.errors import ExitCode


@click.group("retention", cls=Group, context_settings=CONTEXT)
def COMMAND() -> None:
    """Retention runs (m10_recovery.retention_jobs).

    \b
    Example:
      m10 retention history --policy replay_log
      m10 retention show replay_log-000000000001-000000005000.pgcopy.zst
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
        rows = conn.execute(
            query("retention_history"), {"policy": policy, "limit": limit}
        ).fetchall()
    if as_json:
        for r in rows:
            click.echo(json.dumps(r, default=str))
    elif not rows:
        click.echo("no retention runs recorded")
    else:
        print_table(
            rows,
            [
                ("ID", "id"),
                ("RUN", "run_id"),
                ("POLICY", "policy"),
                ("STATUS", "status"),
                ("CUTOFF", "cutoff"),
                ("ARCHIVED", "rows_archived"),
                ("DELETED", "rows_deleted"),
                ("MS", "duration_ms"),
                ("STARTED", "started_at"),
                ("ARCHIVE", "archive_location"),
                ("ERROR", "error"),
            ],
        )
    return ExitCode.OK


@admin_command(
    COMMAND,
    "show",
    help="Print an archived chunk's rows as CSV with a header "
    "line (or, with --binary, the COPY stream to restore).",
)
@click.argument("chunk", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--binary",
    is_flag=True,
    help="A .pgcopy.zst chunk decompressed, as it is: pipe it into "
    "`\\copy TABLE FROM STDIN (FORMAT binary)`.",
)
def show(config: Any, log: Any, chunk: Path, binary: bool) -> int:
    """A .pgcopy.zst chunk (binary COPY) is read through a temporary table shaped by the
    columns in its header, so PostgreSQL itself renders it (the database is only read);
    older chunks (.csv.gz, .jsonl.gz) are printed decompressed."""
    from m10jobs.edges import files
    from m10jobs.jobs.maintenance.chunks import ARCHIVE_SESSION, load_chunk, open_chunk

    stream = open_chunk(chunk.name, files.read_bytes(chunk, files.RETENTION_CHUNK) or b"")
    out = sys.stdout.buffer  # click.get_binary_stream is deprecated since click 8.5
    old_format = chunk.name.endswith(".gz")  # already text: printed as it is
    if old_format and binary:
        raise click.UsageError("--binary is for .pgcopy.zst chunks")
    if old_format or binary:
        out.write(stream)
        return ExitCode.OK
    from m10jobs.edges import db

    dsn = config.require("database_url")
    with (
        db.connect(
            dsn, app="m10 retention show", autocommit=False, options=ARCHIVE_SESSION
        ) as conn,
        db.translated(dsn),
    ):
        load_chunk(conn, chunk.name, stream)
        with conn.cursor() as cur, cur.copy("COPY chunk TO STDOUT (FORMAT csv, HEADER)") as cp:
            for block in cp:
                out.write(block)
        conn.rollback()
    return ExitCode.OK
