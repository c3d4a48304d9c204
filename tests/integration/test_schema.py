"""sql/schema.sql is exactly what migrating from zero yields (M10_UPDATE_SCHEMA=1,
i.e. `make schema`, rewrites it instead), and `m10 db schema --check` tells an
operator whether a live database still matches it."""

from __future__ import annotations

import difflib
import itertools
import os
from typing import Any

import psycopg
from psycopg.rows import dict_row

from devenv.services import Postgres
from m10jobs.edges.migrate import SCHEMA_FILE, dump_schema, migrate

_n = itertools.count()


def fresh_database(pg: Postgres) -> str:
    name = f"schema{os.getpid()}_{next(_n)}"
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    dsn = pg.dsn_for(name)
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        migrate(c)
    return dsn


def test_migrating_from_zero_yields_schema_sql(pg: Postgres) -> None:
    dumped = dump_schema(fresh_database(pg))
    if os.environ.get("M10_UPDATE_SCHEMA") == "1":
        SCHEMA_FILE.write_text(dumped)
    expected = SCHEMA_FILE.read_text()
    diff = "\n".join(
        difflib.unified_diff(
            expected.splitlines(),
            dumped.splitlines(),
            "sql/schema.sql",
            "migrated",
            lineterm="",
            n=1,
        )
    )
    assert dumped == expected, f"sql/schema.sql is stale: run `make schema`\n{diff}"
    # what the issue asked for, visible in the file
    assert "replay_log_event_id_idx" not in expected
    assert expected.count("(event_id)") >= 1 and "outbox_held_idx" in expected


def test_db_schema_check_names_a_hand_made_change(
    cli: Any, env: dict[str, str], pg: Postgres
) -> None:
    dsn = fresh_database(pg)
    env = {**env, "M10_DATABASE_URL": dsn}
    ok = cli("m10", "db", "schema", "--check", env=env)
    assert ok.returncode == 0 and "matches" in ok.stdout, ok.stderr
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE INDEX by_hand ON m10_recovery.outbox (event_type)")
    drift = cli("m10", "db", "schema", "--check", env=env)
    assert drift.returncode == 1
    assert "+CREATE INDEX by_hand" in drift.stdout
    assert "differs from sql/schema.sql" in drift.stderr and "Traceback" not in drift.stderr
    assert "password" not in drift.stdout + drift.stderr
