"""`m10 cost`: what the cost snapshot jobs wrote, for an operator.

m10 cost status                 # newest hour/day snapshotted, anomalies
m10 cost show TENANT [--days N] [--hours N] [--json]
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import click

from m10jobs.cli import Group
from m10jobs.cli.adminkit import CONTEXT, admin_command
from m10jobs.errors import ExitCode


@click.group("cost", cls=Group, context_settings=CONTEXT)
def COMMAND() -> None:
    """Cost snapshots, baselines and anomalies (aos_cost schema).

    \b
    Examples:
      m10 cost status
      m10 cost show acme --days 7
    """


UTC = "-c TimeZone=UTC"  # periods are UTC: show them so

# Derived statistics are shown to the cent (amounts stay exact; --json is exact too).
_ROUNDED = {"mean_usd", "stddev_usd", "threshold_usd"}


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column in _ROUNDED:
        return f"{value:.2f}"
    return str(value)


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> list[str]:
    from m10jobs.cli.table import table

    return table([columns] + [tuple(_cell(c, r[c]) for c in columns) for r in rows], "  ")


def _fetch(config: Any, app: str, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    from m10jobs.edges import db as pg
    from m10jobs.edges.queries import query

    dsn = config.require("database_url")
    with pg.connect(dsn, app=app, options=UTC) as conn, pg.translated(dsn):
        return conn.execute(query(name), params).fetchall()


@admin_command(
    COMMAND,
    "show",
    help="A tenant's recent daily and hourly snapshots, its latest baselines and its anomalies.",
)
@click.argument("tenant")
@click.option(
    "--days",
    type=click.IntRange(1, 3660),
    default=7,
    show_default=True,
    help="Daily snapshots and anomalies of the last N days.",
)
@click.option(
    "--hours",
    type=click.IntRange(0, 24 * 31),
    default=6,
    show_default=True,
    help="Hourly snapshots of the last N hours (0: none).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of tables.")
def show(config: Any, log: Any, tenant: str, days: int, hours: int, as_json: bool) -> int:
    from m10jobs.edges import db as pg
    from m10jobs.edges.queries import one, query

    dsn = config.require("database_url")
    with pg.connect(dsn, app="m10 cost show", options=UTC) as conn, pg.translated(dsn):
        now = one(conn.execute(query("db_now")))["now"]
        since_day = now - timedelta(days=days)
        found = {
            "daily": conn.execute(
                query("cost_show_days"), {"tenant": tenant, "since": since_day}
            ).fetchall(),
            "hourly": conn.execute(
                query("cost_show_hours"), {"tenant": tenant, "since": now - timedelta(hours=hours)}
            ).fetchall()
            if hours
            else [],
            "baselines": conn.execute(query("cost_show_baselines"), {"tenant": tenant}).fetchall(),
            "anomalies": conn.execute(
                query("cost_show_anomalies"), {"tenant": tenant, "since": since_day.date()}
            ).fetchall(),
        }
    if as_json:
        click.echo(json.dumps({"tenant": tenant, **found}, default=str, indent=2))
        return ExitCode.OK
    if not any(found.values()):
        click.echo(
            f"no cost snapshots for tenant {tenant!r} (check the name; "
            "`m10 cost status` shows whether the jobs have run)"
        )
        return ExitCode.OK
    sections = (
        (
            "anomalies",
            f"anomalies (last {days} days)",
            ("day", "category", "amount_usd", "threshold_usd", "mean_usd", "stddev_usd"),
        ),
        (
            "daily",
            f"daily snapshots (last {days} days)",
            ("day", "category", "amount_usd", "record_count"),
        ),
        (
            "baselines",
            "latest baseline per category",
            ("day", "category", "days_observed", "mean_usd", "stddev_usd"),
        ),
        (
            "hourly",
            f"hourly snapshots (last {hours} hours)",
            ("period_start", "category", "amount_usd", "record_count"),
        ),
    )
    click.echo(f"tenant {tenant}")
    for key, title, columns in sections:
        if key == "hourly" and not hours:
            continue
        click.echo(f"\n{title}:" + ("" if found[key] else " none"))
        if found[key]:
            click.echo("\n".join(_table(found[key], columns)))
    return ExitCode.OK


@admin_command(
    COMMAND,
    "status",
    help="Newest hour and day snapshotted, missing hours (a "
    "gap behind the newest hour too), anomaly count.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def status(config: Any, log: Any, as_json: bool) -> int:
    from m10jobs.jobs.cost.health import COST_GRACE_S
    from m10jobs.jobs.cost.settings import CostSettings

    window = config.settings(CostSettings).backfill_max_hours
    row = _fetch(config, "m10 cost status", "cost_status", {})[0]
    gaps = _fetch(
        config,
        "m10 cost status",
        "status_cost_hours",
        {"window_hours": window, "grace_s": COST_GRACE_S},
    )[0]
    row |= {
        "hours_missing": gaps["hours_missing"],
        "window_hours": window,
        "first_missing_hour": gaps["first_missing_hour"],
        "last_missing_hour": gaps["last_missing_hour"],
    }
    if as_json:
        click.echo(json.dumps(row, default=str))
        return ExitCode.OK
    missing = f"{gaps['hours_missing']} in the last {window} h" + (
        f": {gaps['first_missing_hour']:%Y-%m-%d %H:00} .. "
        f"{gaps['last_missing_hour']:%Y-%m-%d %H:00} UTC (aos-cost-snapshot-hourly fills them)"
        if gaps["hours_missing"]
        else ""
    )
    for key, value in (
        ("last_hour", row["last_hour"]),
        ("hours_missing", missing),
        ("last_day", row["last_day"]),
        ("anomalies", row["anomalies"]),
        ("last_anomaly_day", row["last_anomaly_day"]),
    ):
        click.echo(f"{key:18} {'-' if value is None else value}")
    return ExitCode.OK
