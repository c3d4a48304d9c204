"""`m10 dl`: inspect archived dead letters, replay them by hand (one, several, or every
abandoned one), or settle the ones that cannot be replayed with a recorded reason."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from m10jobs.cli import Group
from m10jobs.cli.adminkit import CONTEXT, admin_command, operator
from m10jobs.errors import ExitCode

if TYPE_CHECKING:
    import psycopg

OUTCOMES = ("pending", "already_processed", "replayed", "abandoned", "discarded")
PAGE = 500  # dead letters per transaction in a bulk replay


@click.group("dl", cls=Group, context_settings=CONTEXT)
def COMMAND() -> None:
    """Dead letters in m10_recovery.dead_letter_archive.

    \b
    Examples:
      m10 dl list --outcome abandoned
      m10 dl replay 42
      m10 dl replay --outcome abandoned --type order.created --since 24h --dry-run
      m10 dl discard 42 43 --reason "garbage from the 2026-05-01 import bug"
    """


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    """Rows as aligned text columns (header, key)."""

    def cell(v: Any) -> str:
        if hasattr(v, "isoformat"):
            return v.isoformat(timespec="seconds")
        return "-" if v is None else str(v)

    from m10jobs.cli.table import table

    lines = table([[h for h, _ in columns]] + [[cell(r[k]) for _, k in columns] for r in rows])
    click.echo("\n".join(lines))


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
    for r in rows:
        r["settled"] = (
            f"{r['discarded_by']} at {r['reconciled_at']:%Y-%m-%d %H:%M:%S%z}: "
            f"{r['discard_reason']}"
            if r["outcome"] == "discarded"
            else None
        )
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
                ("REFUSAL", "refusal"),
                ("ARCHIVED", "archived_at"),
                ("SETTLED", "settled"),
            ],
        )
    return ExitCode.OK


def since_filter(value: str | None) -> dict[str, Any]:
    """--since as dl_select's parameters: an age ("90m", "24h", "7d") is counted back from
    the database clock; a date or timestamp is read in the database session's time zone."""
    if value is None:
        return {"since_s": None, "since_ts": None}
    age = re.fullmatch(r"(\d+)([smhd])", value.strip())
    if age:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[age.group(2)]
        return {"since_s": float(int(age.group(1)) * unit), "since_ts": None}
    try:
        datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an age (90m, 24h, 7d) nor a date/time (2026-05-01, "
            "2026-05-01T12:00+00:00)",
            param_hint="--since",
        ) from None
    return {"since_s": None, "since_ts": value.strip()}


@contextmanager
def _under_lease(config: Any, log: Any, app: str, *, dry_run: bool = False) -> Iterator[Any]:
    """A connection under the dl_reconcile lease (the maintenance pass's dead-letter lock,
    so it never reconciles the rows an operator is changing); yields (conn, lease).  A
    dry run takes no lease: it writes nothing."""
    import secrets

    from m10jobs.edges import db
    from m10jobs.edges.lease import Lease, holder_id
    from m10jobs.jobs.maintenance.settings import DL_LOCK

    dsn = config.require("database_url")
    with db.connect(dsn, app=app) as conn, db.translated(dsn):
        if dry_run:
            yield conn, None
            return
        with Lease(
            dsn, conn, DL_LOCK, holder_id(secrets.token_hex(6)), config.lease_ttl_seconds, log
        ) as lease:
            yield conn, lease


def _pages(
    conn: psycopg.Connection[Any],
    lease: Any,
    params: dict[str, Any],
    act: Callable[[psycopg.Cursor[Any], dict[str, Any]], None],
) -> set[int]:
    """Select the matching dead letters (dl_select) a page at a time, each page locked and
    acted on in one transaction, fenced by the lease; the ids seen."""
    from m10jobs.edges.queries import query

    seen: set[int] = set()
    after = 0
    while True:
        with conn.transaction(), conn.cursor() as cur:
            rows = cur.execute(
                query("dl_select"), {**params, "after": after, "limit": PAGE}
            ).fetchall()
            for row in rows:
                seen.add(row["id"])
                act(cur, row)
            if lease is not None:
                lease.fence(cur)
        if len(rows) < PAGE:
            return seen
        after = rows[-1]["id"]


def _missing(ids: tuple[int, ...], seen: set[int], codes: list[int]) -> None:
    for i in ids:
        if i not in seen:
            click.echo(f"dead letter {i} does not exist; see `m10 dl list`", err=True)
            codes.append(ExitCode.DATAERR)


def _exit_code(codes: list[int]) -> int:
    """0 when all went well; the one code all failures agree on; else 1."""
    bad = {c for c in codes if c != ExitCode.OK}
    if not bad:
        return ExitCode.OK
    return bad.pop() if len(bad) == 1 else ExitCode.FAILED


def replay_one(
    cur: psycopg.Cursor[Any], row: dict[str, Any], *, force: bool, dry_run: bool, limit: int
) -> tuple[int, str]:
    """One dead letter replayed by hand, the same for `m10 dl replay ID` and a bulk
    replay: (exit code, the line to print).  Ignores the replay cap; refuses a letter
    that was settled (unless force) or that a replay would fail the same way."""
    from m10jobs.edges.queries import one, query
    from m10jobs.jobs.maintenance import deadletters as dl

    n = row["id"]
    outcome = row["reconcile_outcome"]
    if outcome in ("already_processed", "replayed", "discarded") and not force:
        return ExitCode.FAILED, (
            f"dead letter {n} is already {outcome}"
            + (f" (event {row['replay_event_id']})" if row["replay_event_id"] else "")
            + "; add --force to replay it again"
        )
    refusal = dl.refused(row, limit)
    if refusal is not None:
        return ExitCode.DATAERR, (
            f"dead letter {n} cannot be replayed: {refusal[1]}; {dl.settle_hint(row, refusal[0])}"
        )
    attempt = one(cur.execute(query("dl_replays_done"), row))["n"] + 1
    if dry_run:
        return ExitCode.OK, f"dead letter {n}: would be replayed (replay {attempt})"
    new_id = dl.replay(cur, row, attempt)
    return ExitCode.OK, f"dead letter {n}: replayed as outbox event {new_id} (replay {attempt})"


@admin_command(
    COMMAND,
    "replay",
    help="Re-enqueue archived dead letters through the outbox: the IDs given, or every one "
    "with --outcome (and --type/--since); under the dl_reconcile lease; ignores the replay "
    "cap. Letters refused for their size or shape are never replayed (use discard).",
)
@click.argument("dead_letter_ids", metavar="[ID]...", type=int, nargs=-1)
@click.option(
    "--outcome",
    type=click.Choice(["abandoned"]),
    help="Replay every dead letter with this outcome (bulk).",
)
@click.option("--type", "event_type", metavar="T", help="Only dead letters of this event type.")
@click.option(
    "--since",
    metavar="AGE|TIME",
    help="Only dead letters dead-lettered since: an age (90m, 24h, 7d) or a date/time.",
)
@click.option(
    "--force", is_flag=True, help="Replay even if it was processed, replayed or discarded."
)
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; change nothing.")
def dl_replay(
    config: Any,
    log: Any,
    dead_letter_ids: tuple[int, ...],
    outcome: str | None,
    event_type: str | None,
    since: str | None,
    force: bool,
    dry_run: bool,
) -> int:
    from m10jobs.jobs.maintenance import deadletters as dl

    if not dead_letter_ids and outcome is None:
        raise click.UsageError("give dead letter IDs, or --outcome abandoned for a bulk replay")
    params = {
        "ids": list(dead_letter_ids) or None,
        "outcome": outcome,
        "event_type": event_type,
        **since_filter(since),
        "max_payload_bytes": dl.payload_limit(config),
    }
    codes: list[int] = []

    def act(cur: psycopg.Cursor[Any], row: dict[str, Any]) -> None:
        code, line = replay_one(
            cur, row, force=force, dry_run=dry_run, limit=params["max_payload_bytes"]
        )
        codes.append(code)
        click.echo(line, err=code != ExitCode.OK)
        if code == ExitCode.OK and not dry_run:
            log.warning("%s (by hand, %s)", line, operator())

    with _under_lease(config, log, "m10 dl replay", dry_run=dry_run) as (conn, lease):
        seen = _pages(conn, lease, params, act)
    _missing(dead_letter_ids, seen, codes)
    if outcome is not None or len(codes) > 1:
        done = sum(1 for c in codes if c == ExitCode.OK)
        verb = "would be replayed" if dry_run else "replayed"
        click.echo(f"{done} {verb}, {len(codes) - done} not" + (" (dry run)" if dry_run else ""))
    return _exit_code(codes)


@admin_command(
    COMMAND,
    "discard",
    help="Settle dead letters that will not be replayed (pending or abandoned): recorded "
    "with who, when (database clock) and --reason; no longer abandoned. Idempotent.",
)
@click.argument("dead_letter_ids", metavar="ID...", type=int, nargs=-1, required=True)
@click.option("--reason", required=True, help="Why they are discarded (kept with each).")
def dl_discard(config: Any, log: Any, dead_letter_ids: tuple[int, ...], reason: str) -> int:
    from m10jobs.edges.queries import one, query

    if not reason.strip():
        raise click.BadParameter(
            "must say why (it is kept with each dead letter)", param_hint="--reason"
        )
    who = operator()
    codes: list[int] = []

    def act(cur: psycopg.Cursor[Any], row: dict[str, Any]) -> None:
        n, outcome = row["id"], row["reconcile_outcome"]
        if outcome == "discarded":
            codes.append(ExitCode.OK)
            click.echo(
                f"dead letter {n}: already discarded by {row['discarded_by']} at "
                f"{row['reconciled_at']:%Y-%m-%d %H:%M:%S%z} ({row['discard_reason']})"
            )
        elif outcome in (None, "abandoned"):
            at = one(
                cur.execute(query("dl_discard"), {"id": n, "who": who, "why": reason.strip()})
            )["reconciled_at"]
            codes.append(ExitCode.OK)
            log.warning(
                "dead letter %s (%s, key %s) discarded by %s (was %s): %s",
                n,
                row["event_type"],
                row["idempotency_key"],
                who,
                outcome or "pending",
                reason.strip(),
                extra={"operator": who, "dead_letter_id": n},
            )
            click.echo(f"dead letter {n}: discarded by {who} at {at:%Y-%m-%d %H:%M:%S%z}")
        else:
            codes.append(ExitCode.FAILED)
            click.echo(f"dead letter {n} is already {outcome}; nothing to discard", err=True)

    params = {
        "ids": list(dead_letter_ids),
        "outcome": None,
        "event_type": None,
        **since_filter(None),
        "max_payload_bytes": 0,  # discard never needs a payload
    }
    with _under_lease(config, log, "m10 dl discard") as (conn, lease):
        seen = _pages(conn, lease, params, act)
    _missing(dead_letter_ids, seen, codes)
    return _exit_code(codes)
