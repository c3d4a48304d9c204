"""Helpers for the cost snapshot tests: records, config files, snapshot reads."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

Conn = psycopg.Connection[dict[str, Any]]
T0 = datetime(2026, 1, 10, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)

# Blocks a period's source read (never the validation over the empty 1970 period)
# while the test holds advisory lock 42: makes "a pass is mid-run" deterministic.
GATE_FUNCTION = """
CREATE FUNCTION public.cost_gate(p timestamptz) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF p > '2000-01-01' THEN PERFORM pg_advisory_xact_lock_shared(42); END IF;
    RETURN true;
END $$;
"""
GATED_QUERY = """
SELECT tenant_id, category, sum(amount_usd) AS amount_usd, count(*) AS record_count
  FROM aos_cost.cost_records
 WHERE occurred_at >= %(period_start)s AND occurred_at < %(period_end)s
   AND (SELECT public.cost_gate(%(period_start)s))
 GROUP BY tenant_id, category
"""


def add(conn: Conn, at: datetime, tenant: str, category: str, amount: str | Decimal) -> None:
    conn.execute(
        "INSERT INTO aos_cost.cost_records (occurred_at, tenant_id, category, "
        "amount_usd) VALUES (%s, %s, %s, %s)",
        (at, tenant, category, Decimal(amount)),
    )


def write_config(path: Path, **cost: Any) -> Path:
    lines = ["[cost]"]
    for key, value in cost.items():
        if isinstance(value, str):
            lines.append(f"{key} = '''{value}'''")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def with_config(
    env: dict[str, str], tmp_path: Path, name: str = "cost.toml", **cost: Any
) -> dict[str, str]:
    return {**env, "M10_CONFIG": str(write_config(tmp_path / name, **cost))}


def until(t: datetime) -> str:
    return t.isoformat()


def summary(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The task summary from the runner's JSON line on stdout."""
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    return doc["tasks"][0].get("summary", {}) if doc["tasks"] else {}


def snapshots(conn: Conn, granularity: str) -> list[tuple[datetime, str, str, Decimal, int]]:
    rows = conn.execute(
        "SELECT period_start, tenant_id, category, amount_usd, record_count "
        "FROM aos_cost.cost_snapshots WHERE granularity = %s "
        "ORDER BY period_start, tenant_id, category",
        (granularity,),
    ).fetchall()
    return [
        (
            r["period_start"].astimezone(UTC),
            r["tenant_id"],
            r["category"],
            r["amount_usd"],
            r["record_count"],
        )
        for r in rows
    ]


def periods(conn: Conn, granularity: str) -> list[datetime]:
    rows = conn.execute(
        "SELECT period_start FROM aos_cost.snapshot_periods WHERE granularity = %s ORDER BY 1",
        (granularity,),
    ).fetchall()
    return [r["period_start"].astimezone(UTC) for r in rows]


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in proc.stderr.splitlines()
        if line.startswith("{") and '"level": "ERROR"' in line
    ]
