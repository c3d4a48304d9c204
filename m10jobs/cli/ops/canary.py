"""`m10 canary status`: the latest canary report and what rollback did about it.

For recovery: is the report whole (exit 65 if not), how old, which probes
failed, and whether rollback already acted on it (so nobody repeats it by hand
without knowing).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import click

from m10jobs.cli import Group
from m10jobs.cli.adminkit import CONTEXT, admin_command


@click.group("canary", cls=Group, context_settings=CONTEXT)
def COMMAND() -> None:
    """Canary reports and rollback actions.

    \b
    Example:
      m10 canary status
    """


@admin_command(COMMAND, "status")
@click.option("--json", "as_json", is_flag=True, help="One JSON document (for machines).")
def status(config: Any, log: logging.Logger, as_json: bool) -> int:
    """Show this host's latest_report.json (verdict, age, probes) and the rollback
    ledger's row for it (cluster-wide: whichever host acted)."""
    from m10jobs.edges import db as pg
    from m10jobs.edges.queries import query
    from m10jobs.jobs.canary import report as cr

    path = cr.latest_path(config.state_dir)
    report = cr.load(path)
    if report is None:
        click.echo(f"no canary report at {path} yet")
        return 0
    dsn = config.require("database_url")
    with pg.connect(dsn, app="m10 canary status") as conn, pg.translated(dsn):
        action = conn.execute(query("rollback_action"), {"report_run_id": report.run_id}).fetchone()
        last = conn.execute(query("rollback_latest")).fetchone()
        now = pg.now(conn).timestamp()  # the clock the report was stamped with
    shown = {
        "report": str(path),
        "run_id": report.run_id,
        "verdict": report.verdict,
        "score": report.score,
        "reason": report.raw.get("reason"),
        "finished_at": report.finished_at.isoformat(),
        "age_s": round(now - report.finished_at.timestamp(), 1),
        "not_passing": [
            {k: p.get(k) for k in ("name", "status", "detail", "critical")}
            for p in report.raw["probes"]
            if p["status"] != "pass"
        ],
        "rollback": action,
        "last_rollback": last,
    }
    if as_json:
        click.echo(json.dumps(shown, indent=2, default=str))
        return 0
    _print_text(shown, report.raw["probes"])
    return 0


def _print_text(shown: dict[str, Any], probes: list[dict[str, Any]]) -> None:
    from m10jobs.cli.ops.deadletters import print_table

    def ledger(row: dict[str, Any] | None, keys: tuple[str, ...]) -> str:
        return (
            "none"
            if row is None
            else " ".join(f"{k}={row[k]}" for k in keys if row.get(k) is not None)
        )

    for label, value in (
        ("report", shown["report"]),
        ("run", f"{shown['run_id']}, finished {shown['finished_at']} ({shown['age_s']:.0f}s ago)"),
        (
            "verdict",
            f"{shown['verdict']} (score {shown['score']})"
            + (f": {shown['reason']}" if shown["reason"] else ""),
        ),
        (
            "rollback",
            "nothing done for this report"
            if shown["rollback"] is None
            else ledger(
                shown["rollback"],
                ("host", "outcome", "exit_status", "started_at", "finished_at", "duration_s"),
            ),
        ),
        (
            "last",
            ledger(shown["last_rollback"], ("report_run_id", "host", "outcome", "started_at")),
        ),
    ):
        click.echo(f"{label:9} {value}")
    click.echo("")
    print_table(
        probes,
        [
            ("PROBE", "name"),
            ("STATUS", "status"),
            ("VALUE", "value"),
            ("THRESHOLD", "threshold"),
            ("CRITICAL", "critical"),
            ("DETAIL", "detail"),
        ],
    )
