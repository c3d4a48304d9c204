"""Seed isolation: L5/L6 (role m10_app) can enqueue and nothing else; PUBLIC has nothing."""

from __future__ import annotations

import itertools
import os
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

Conn = psycopg.Connection[dict[str, Any]]
TABLES = [
    "distributed_locks",
    "replay_log",
    "dead_letter_archive",
    "outbox",
    "retention_jobs",
    "schema_migrations",
    "rollback_actions",
    "daily_stats",
]
_n = itertools.count()


def login_role(conn: Conn, dsn: str, *grants: str) -> Conn:
    name = f"r{os.getpid()}_{next(_n)}"
    conn.execute(f"CREATE ROLE {name} LOGIN")
    for g in grants:
        conn.execute(f"GRANT {g} TO {name}")
    user_dsn = dsn.replace("postgresql://postgres@", f"postgresql://{name}@")
    return psycopg.connect(user_dsn, autocommit=True, row_factory=dict_row)


@pytest.mark.parametrize("grants", [("m10_app",), ()], ids=["m10_app", "public"])
def test_app_role_and_public_cannot_read_any_l7_table(
    conn: Conn, dsn: str, grants: tuple[str, ...]
) -> None:
    with login_role(conn, dsn, *grants) as app:
        for table in TABLES:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(f"SELECT * FROM m10_recovery.{table} LIMIT 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("INSERT INTO m10_recovery.outbox (event_type, payload) VALUES ('x', '{}')")


@pytest.mark.parametrize(
    "call",
    [
        "acquire_lock('x', 'y', 10)",
        "release_lock('x', 'y')",
        "extend_lock('x', 'y', 1, 10)",
        "reclaim_expired_locks()",
        "assert_lease('x', 'y', 1)",
        "force_release_lock('x')",
    ],
)
def test_app_role_cannot_call_lock_functions(conn: Conn, dsn: str, call: str) -> None:
    with (
        login_role(conn, dsn, "m10_app") as app,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        app.execute(f"SELECT m10_recovery.{call}")


def test_app_role_can_enqueue_and_a_repeated_key_returns_the_first_id(conn: Conn, dsn: str) -> None:
    with login_role(conn, dsn, "m10_app") as app:
        q = "SELECT m10_recovery.enqueue_outbox(%s, %s::jsonb, 'order', '42', %s) AS id"
        first = app.execute(q, ("order.created", '{"a": 1}', "k-1")).fetchone()["id"]
        again = app.execute(q, ("order.created", '{"a": 2}', "k-1")).fetchone()["id"]
        other = app.execute(q, ("order.created", '{"a": 3}', "k-2")).fetchone()["id"]
        no_key = app.execute("SELECT m10_recovery.enqueue_outbox('e', '{}') AS id").fetchone()
    assert first == again and other != first and no_key["id"] not in (first, other)
    rows = conn.execute("SELECT id, payload FROM m10_recovery.outbox ORDER BY id").fetchall()
    assert [r["payload"] for r in rows] == [{"a": 1}, {"a": 3}, {}]


def test_public_cannot_enqueue(conn: Conn, dsn: str) -> None:
    with login_role(conn, dsn) as nobody, pytest.raises(psycopg.errors.InsufficientPrivilege):
        nobody.execute("SELECT m10_recovery.enqueue_outbox('e', '{}')")


def test_enqueue_rejects_an_empty_event_type(conn: Conn) -> None:
    with pytest.raises(psycopg.Error) as info:
        conn.execute("SELECT m10_recovery.enqueue_outbox('', '{}')")
    assert info.value.sqlstate == "22023"


def test_security_definer_functions_pin_search_path(conn: Conn) -> None:
    rows = conn.execute("""
        SELECT p.proname, p.prosecdef, p.proconfig FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'm10_recovery'
    """).fetchall()
    assert rows
    for r in rows:
        assert any(c.startswith("search_path=") for c in (r["proconfig"] or [])), r["proname"]
