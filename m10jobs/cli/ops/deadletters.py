"""`m10 dl`: inspect archived dead letters and replay one by hand."""

from __future__ import annotations

import json
from typing import Any

import click

from m10jobs.cli import Group
from m10jobs.cli.adminkit import CONTEXT, admin_command
from m10jobs.errors import ExitCode

OUTCOMES = ("pending", "already_processed", "replayed", "abandoned")


@click.group("dl", cls=Group, context_settings=CONTEXT)
def COMMAND() -> None:
    """Dead letters in m10_recovery.dead_letter_archive.

    \b
    Examples:
      m10 dl list --outcome abandoned
      m10 dl replay 42
    """


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    """Rows as aligned text columns (header, key)."""

    def cell(v: Any) -> str:
        if hasattr(v, "isoformat"):
            return v.isoformat(timespec="seconds")
        return "-" if v is None else str(v)

    table = [[h for h, _ in columns]] + [[cell(r[k]) for _, k in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for row in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@admin_command(COMMAND, "list", help="Archived dead letters, newest first.")
@click.option("--stream", help="Dead-letter or source stream name.")
@click.option("--reason", help="Substring of the reason (case-insensitive).")
@click.option("--outcome", type=click.Choice(OUTCOMES), help="Reconcile outcome.")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter.")
def dl_list(
    config: Any,
    log: Any,
    stream: str | None,
    reason: str | None,
    outcome: str | None,
    limit: int,
    as_json: bool,
) -> int:
    from m10jobs.edges import db
    from m10jobs.edges.queries import query

    dsn = config.require("database_url")
    with db.connect(dsn, app="m10 dl list") as conn, db.translated(dsn):
        rows = conn.execute(
            query("dl_list"),
            {"stream": stream, "reason": reason, "outcome": outcome, "limit": limit},
        ).fetchall()
    if as_json:
        for r in rows:
            click.echo(json.dumps(r, default=str))
    elif not rows:
        click.echo("no dead letters match")
    else:
        print_table(
            rows,
            [
                ("ID", "id"),
                ("STREAM", "dl_stream"),
                ("SOURCE", "source_stream"),
                ("EVENT", "event_id"),
                ("TYPE", "event_type"),
                ("KEY", "idempotency_key"),
                ("REASON", "reason"),
                ("OUTCOME", "outcome"),
                ("ATTEMPTS", "reconcile_attempts"),
                ("REPLAY", "replay_event_id"),
                ("ARCHIVED", "archived_at"),
            ],
        )
    return ExitCode.OK


@admin_command(
    COMMAND,
    "replay",
    help="Re-enqueue one archived dead letter through the outbox "
    "(under the dl_reconcile lease; ignores the replay cap).",
)
@click.argument("dead_letter_id", type=int)
@click.option("--force", is_flag=True, help="Replay even if it was already processed or replayed.")
def dl_replay(config: Any, log: Any, dead_letter_id: int, force: bool) -> int:
    import secrets

    from m10jobs.edges import db
    from m10jobs.edges.lease import Lease, holder_id
    from m10jobs.edges.queries import query
    from m10jobs.jobs.maintenance import deadletters as dl
    from m10jobs.jobs.maintenance.settings import DL_LOCK

    dsn = config.require("database_url")
    with (
        db.connect(dsn, app="m10 dl replay") as conn,
        db.translated(dsn),
        Lease(
            dsn, conn, DL_LOCK, holder_id(secrets.token_hex(6)), config.lease_ttl_seconds, log
        ) as lease,
        conn.transaction(),
        conn.cursor() as cur,
    ):
        row = cur.execute(query("dl_get"), {"id": dead_letter_id}).fetchone()
        if row is None:
            click.echo(f"dead letter {dead_letter_id} does not exist; see `m10 dl list`", err=True)
            return ExitCode.DATAERR
        if row["reconcile_outcome"] in ("already_processed", "replayed") and not force:
            click.echo(
                f"dead letter {dead_letter_id} is already {row['reconcile_outcome']} "
                f"(event {row['replay_event_id']}); add --force to replay it again",
                err=True,
            )
            return ExitCode.FAILED
        why = dl.unreplayable(row)
        if why:
            click.echo(f"dead letter {dead_letter_id} cannot be replayed: {why}", err=True)
            return ExitCode.DATAERR
        attempt = cur.execute(query("dl_replays_done"), row).fetchone()["n"] + 1
        new_id = dl.replay(cur, row, attempt)
        lease.fence(cur)
    log.warning("dead letter %s replayed by hand as outbox event %s", dead_letter_id, new_id)
    click.echo(
        f"dead letter {dead_letter_id}: replayed as outbox event {new_id} (replay {attempt})"
    )
    return ExitCode.OK
