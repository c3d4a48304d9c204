"""`m10 canary status`: the latest canary report and what rollback did about it.

For recovery: is the report whole (exit 65 if not), how old, which probes
failed, and whether rollback already acted on it (so nobody repeats it by hand
without knowing).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import click

from m10jobs.cli.adminkit import CONTEXT, admin_command


@click.group("canary", context_settings=CONTEXT)
def COMMAND() -> None:
    """Canary reports and rollback actions.

    \b
    Example:
      m10 canary status
    """


@admin_command(COMMAND, "status")
def status(config: Any, log: logging.Logger) -> int:
    """Show this host's latest_report.json (verdict, age, failing probes) and the rollback
    ledger's row for it (cluster-wide: whichever host acted)."""
    from m10jobs import canary_report as cr
    from m10jobs.edges import db as pg
    from m10jobs.edges.queries import query

    path = cr.latest_path(config.state_dir)
    report = cr.load(path)
    if report is None:
        click.echo(f"no canary report at {path} yet")
        return 0
    dsn = config.require("database_url")
    with pg.connect(dsn, app="m10 canary status") as conn, pg.translated(dsn):
        action = conn.execute(query("rollback_action"),
                              {"report_run_id": report.run_id}).fetchone()
        last = conn.execute(query("rollback_latest")).fetchone()
    click.echo(json.dumps({
        "report": str(path),
        "run_id": report.run_id,
        "verdict": report.verdict,
        "score": report.score,
        "reason": report.raw.get("reason"),
        "finished_at": report.finished_at.isoformat(),
        "age_s": round(time.time() - report.finished_at.timestamp(), 1),
        "not_passing": [{k: p.get(k) for k in ("name", "status", "detail", "critical")}
                        for p in report.raw["probes"] if p["status"] != "pass"],
        "rollback": action,
        "last_rollback": last,
    }, indent=2, default=str))
    return 0
