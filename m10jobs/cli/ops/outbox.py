"""`m10 outbox`: what an operator needs while the outbox is backed up or failing.

m10 outbox status            backlog, oldest pending age, leader and lease expiry, dead letters
m10 outbox problems          dead-lettered and failing events, newest first
m10 outbox retry EVENT_ID    put a dead-lettered or failing event back in the queue now
"""

from __future__ import annotations

import json
from typing import Any

import click

from m10jobs.cli import Group
from m10jobs.cli.adminkit import CONTEXT, admin_command, operator
from m10jobs.errors import BadInput, ExitCode
from m10jobs.jobs.outbox.settings import LOCK as OUTBOX_LOCK


@click.group("outbox", cls=Group, context_settings=CONTEXT)
def COMMAND() -> None:
    """The outbox: backlog, leader, dead letters, retries by hand."""


def _connect(config: Any, app: str) -> Any:
    from m10jobs.edges import db

    return db.connect(config.require("database_url"), app=app)


@admin_command(COMMAND, "status", help="Backlog, oldest pending age, leader, dead letters.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def status(config: Any, log: Any, as_json: bool) -> int:
    from m10jobs.edges import db
    from m10jobs.edges.queries import query

    dsn = config.require("database_url")
    with _connect(config, "m10 outbox status") as conn, db.translated(dsn):
        backlog = conn.execute(query("outbox_backlog")).fetchone()
        extra = conn.execute(query("outbox_status_extra")).fetchone()
        leader = conn.execute(query("lock_holder"), {"name": OUTBOX_LOCK}).fetchone()
    live = leader is not None and leader["expires_in_s"] > 0
    report = {
        "backlog": backlog["backlog"],
        "retrying": backlog["retrying"],
        "oldest_pending_age_s": round(backlog["oldest_pending_age_s"], 1),
        "dead_lettered": backlog["dead_lettered"],
        "dead_letters_unreconciled": extra["dead_letters_unreconciled"],
        "last_published_at": extra["last_published_at"],
        "leader": leader["holder_id"] if live else None,
        "fencing_token": leader["fencing_token"] if live else None,
        "lease_expires_in_s": round(leader["expires_in_s"], 1) if live else None,
    }
    if as_json:
        click.echo(json.dumps(report, default=str))
        return ExitCode.OK
    lead = (
        f"{report['leader']} (token {report['fencing_token']}, lease expires in "
        f"{report['lease_expires_in_s']}s)"
        if live
        else "none (no pass running)"
    )
    for label, value in (
        ("backlog", f"{report['backlog']} pending ({report['retrying']} waiting for a retry)"),
        ("oldest pending", f"{report['oldest_pending_age_s']}s"),
        (
            "dead-lettered",
            f"{report['dead_lettered']} event(s); "
            f"{report['dead_letters_unreconciled']} archived dead letter(s) "
            "not yet reconciled",
        ),
        ("last published", str(report["last_published_at"] or "never")),
        ("leader", lead),
    ):
        click.echo(f"{label:16} {value}")
    return ExitCode.OK


@admin_command(COMMAND, "problems", help="Dead-lettered and failing events, newest first.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
def problems(config: Any, log: Any, limit: int, as_json: bool) -> int:
    from m10jobs.edges import db
    from m10jobs.edges.queries import query

    dsn = config.require("database_url")
    with _connect(config, "m10 outbox problems") as conn, db.translated(dsn):
        rows = conn.execute(query("outbox_problem_events"), {"limit": limit}).fetchall()
    for r in rows:
        if as_json:
            click.echo(json.dumps(r, default=str))
        else:
            click.echo(
                f"{r['id']:>10}  {r['status']:13} attempts={r['attempts']:<3} "
                f"{r['event_type']}  {r['last_error'] or ''}"
            )
    if not rows and not as_json:
        click.echo("no dead-lettered or failing events")
    return ExitCode.OK


@admin_command(COMMAND, "retry", help="Put a dead-lettered or failing event back in the queue.")
@click.argument("event_id", type=int)
def retry(config: Any, log: Any, event_id: int) -> int:
    """The event keeps its id, so the stream dedup still guarantees one publish; its
    attempt count starts again and the next m10-outbox-processor pass picks it up."""
    from m10jobs.edges import db
    from m10jobs.edges.queries import query

    dsn = config.require("database_url")
    with _connect(config, "m10 outbox retry") as conn, db.translated(dsn):
        event = conn.execute(query("outbox_event"), {"id": event_id}).fetchone()
        if event is None:
            raise BadInput(
                f"outbox event {event_id} does not exist; list candidates with "
                "`m10 outbox problems`"
            )
        if event["status"] == "published":
            raise BadInput(
                f"outbox event {event_id} was already published at "
                f"{event['published_at']}; nothing to retry"
            )
        conn.execute(query("outbox_retry_event"), {"id": event_id})
    who = operator()
    log.warning(
        "outbox event %d (%s) requeued by %s; it was %s after %d attempt(s): %s",
        event_id,
        event["event_type"],
        who,
        event["status"],
        event["attempts"],
        event["last_error"],
        extra={"operator": who, "event_id": event_id},
    )
    click.echo(
        f"event {event_id}: requeued (was {event['status']}, {event['attempts']} "
        "attempt(s)); the next m10-outbox-processor pass publishes it"
    )
    return ExitCode.OK
