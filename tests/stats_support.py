"""Shared helpers for the daily-stats and fallback tests."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg

from devenv.services import free_port


def seed_day(
    conn: psycopg.Connection[Any], day: date, n: int, *, synthetic: int = 0, hour: int = 12
) -> None:
    """n published outbox events created on day at hour:00 UTC (latency 100 ms * k),
    plus `synthetic` synthetic events of which one stays pending."""
    conn.execute(
        """INSERT INTO m10_recovery.outbox (event_type, payload, status, created_at, published_at)
           SELECT 'order.created', '{}', 'published', %(ts)s::timestamptz,
                  %(ts)s::timestamptz + make_interval(secs => g * 0.1)
             FROM generate_series(1, %(n)s) g""",
        {"ts": f"{day.isoformat()} {hour:02d}:00:00+00", "n": n},
    )
    if synthetic:
        conn.execute(
            """INSERT INTO m10_recovery.outbox (event_type, payload, status, created_at,
                                                published_at)
               SELECT 'm10.synthetic', '{}',
                      CASE WHEN g = 1 THEN 'pending' ELSE 'published' END, %(ts)s::timestamptz,
                      CASE WHEN g = 1 THEN NULL ELSE %(ts)s::timestamptz + interval '1 second' END
                 FROM generate_series(1, %(n)s) g""",
            {"ts": f"{day.isoformat()} {hour:02d}:00:00+00", "n": synthetic},
        )


def stats_files(log_dir: Path) -> dict[str, bytes]:
    """Every visible stats artifact (CSV + marker) by name, with its bytes."""
    if not log_dir.is_dir():
        return {}
    return {
        p.name: p.read_bytes() for p in sorted(log_dir.iterdir()) if p.name.startswith("m10_stats_")
    }


def closed_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"


def summary(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


def days(first: date, n: int) -> list[date]:
    return [first + timedelta(k) for k in range(n)]
