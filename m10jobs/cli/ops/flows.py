"""`m10 flows`: the L7 flow inventory, and an audit of a live installation."""

from __future__ import annotations

from typing import Any

import click

from m10jobs.cli.adminkit import admin_command
from m10jobs.errors import ExitCode


@admin_command(
    None,
    "flows",
    help="Print the L7 flow inventory (derived from the job "
    "registry); with --check, audit the live installation (exit 1 on a breach).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "markdown"]), default="text", show_default=True
)
@click.option("--check", is_flag=True, help="Verify isolation/atomicity on the live database.")
def flows(config: Any, log: Any, fmt: str, check: bool) -> int:
    from m10jobs import flows as inventory

    if not check:
        click.echo(inventory.markdown() if fmt == "markdown" else inventory.text() + "\n", nl=False)
        return ExitCode.OK
    from m10jobs.audit import Audit, run_checks
    from m10jobs.edges import db

    dsn = config.require("database_url")
    with db.connect(dsn, app="m10 flows --check") as conn, db.translated(dsn):
        results = run_checks(Audit(conn, config))
    breaches = 0
    for check_, found in results:
        click.echo(f"{'PASS' if not found else 'FAIL'}  {check_.title}: {check_.why}")
        for breach in found:
            click.echo(f"      - {breach}")
            log.error("flow audit breach: %s: %s", check_.title, breach)
        breaches += len(found)
    click.echo(
        f"\n{len(results) - sum(1 for _, f in results if f)}/{len(results)} properties "
        f"hold; {breaches} breach(es)"
    )
    return ExitCode.FAILED if breaches else ExitCode.OK


COMMAND = flows
