"""`m10 db migrate`: apply sql/migrations/NNN_*.sql in order, exactly once each.

Safe to run twice and from two hosts at once: a session advisory lock
serialises migrators (the lease table may not exist yet), each file runs in its
own transaction together with its bookkeeping row, and a file whose checksum
differs from what was applied is refused before anything runs (exit 78).
sql/grants.sql is re-applied at the end so every object follows the access policy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from m10jobs.edges.queries import SQL_DIR
from m10jobs.errors import ConfigError

MIGRATIONS_DIR = SQL_DIR / "migrations"
GRANTS = SQL_DIR / "grants.sql"
# pg_advisory_lock key: 'm10m' as an int; only migrators use it.
MIGRATE_LOCK_KEY = 0x6D31306D

BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS m10_recovery;
CREATE TABLE IF NOT EXISTS m10_recovery.schema_migrations (
    version    text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON m10_recovery.schema_migrations FROM PUBLIC;
"""


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def available(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    return [Migration(p.stem, p) for p in sorted(directory.glob("[0-9][0-9][0-9]_*.sql"))]


def migrate(conn: psycopg.Connection[dict[str, Any]], directory: Path = MIGRATIONS_DIR,
            *, dry_run: bool = False) -> list[str]:
    """Apply what is pending; the versions applied (or, dry run, that would be)."""
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))
    try:
        if not dry_run:
            conn.execute(BOOTSTRAP)
        applied = _applied(conn)
        pending = _check(available(directory), applied)
        if dry_run:
            return [m.version for m in pending]
        for m in pending:
            with conn.transaction():
                conn.execute(m.sql)
                conn.execute("INSERT INTO m10_recovery.schema_migrations (version, checksum) "
                             "VALUES (%s, %s)", (m.version, m.checksum))
        with conn.transaction():
            conn.execute(GRANTS.read_text())
        return [m.version for m in pending]
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK_KEY,))


def _applied(conn: psycopg.Connection[dict[str, Any]]) -> dict[str, str]:
    exists = conn.execute(
        "SELECT to_regclass('m10_recovery.schema_migrations') IS NOT NULL AS e").fetchone()
    if not exists["e"]:
        return {}
    rows = conn.execute("SELECT version, checksum FROM m10_recovery.schema_migrations").fetchall()
    return {r["version"]: r["checksum"] for r in rows}


def _check(migrations: list[Migration], applied: dict[str, str]) -> list[Migration]:
    known = {m.version for m in migrations}
    for m in migrations:
        if m.version in applied and applied[m.version] != m.checksum:
            raise ConfigError(
                f"migration {m.path.name} was edited after it was applied (checksum "
                f"{m.checksum[:12]} != applied {applied[m.version][:12]}); restore the file "
                "from version control and put the change in a new migration"
            )
    missing = sorted(set(applied) - known)
    if missing:
        raise ConfigError(f"the database has migrations this version does not know "
                          f"({', '.join(missing)}); run a newer m10jobs")
    return [m for m in migrations if m.version not in applied]

