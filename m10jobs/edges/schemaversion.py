"""The release gate: whether this release may run on the connected database's schema
(m10jobs.release says what it runs on), in one query, and each host's release.

Called right after connecting: by the runner before any task, and by db.connect for
admin commands (adminkit arms it), so a release never half-runs on a schema it does
not fit (the 78 says which command fixes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from m10jobs import release
from m10jobs.edges.queries import one, query
from m10jobs.errors import ConfigError


class SchemaMismatch(ConfigError):
    """This release must not run on this database's schema (78, nothing done)."""


@dataclass(frozen=True)
class SchemaState:
    version: str | None  # the newest applied migration's number; None: not migrated
    newer: list[release.Newer] = field(default_factory=list)
    unreadable: bool = False  # the role may not read schema_migrations (before 160)

    def refusal(self) -> str | None:
        if self.unreadable:
            return (
                f"database schema is older than {release.REQUIRES} (this role may not read "
                "m10_recovery.schema_migrations, which migration 160 grants m10_ops), this "
                f"release needs {release.REQUIRES}: run `m10 db migrate`, and check that the "
                "role in M10_DATABASE_URL is a member of m10_ops"
            )
        return release.refusal(self.version, self.newer)


def read(conn: psycopg.Connection[Any]) -> SchemaState:
    """The schema version and the applied migrations newer than this release knows.

    On a connection in a transaction, a failure leaves it aborted: callers raise anyway."""
    try:
        row = one(conn.execute(query("schema_version"), {"known": release.knows()}))
    except psycopg.errors.UndefinedTable:
        return SchemaState(None)
    except psycopg.errors.InsufficientPrivilege:
        return SchemaState(None, unreadable=True)
    newer = [
        release.Newer(n["version"], n.get("compatible_with"), n.get("release"))
        for n in row["newer"] or []
    ]
    version = row["version"]
    return SchemaState(release.number(version) if version else None, newer)


def gate(conn: psycopg.Connection[Any]) -> SchemaState:
    """SchemaMismatch (78) unless this release may run on the database's schema."""
    state = read(conn)
    why = state.refusal()
    if why:
        raise SchemaMismatch(why)
    return state


def host_seen(conn: psycopg.Connection[Any], host: str) -> None:
    """Record that `host` runs this release (m10 status names hosts a schema left behind)."""
    conn.execute(
        query("host_seen"),
        {
            "host": host,
            "release": release.VERSION,
            "requires": release.REQUIRES,
            "knows": release.knows(),
        },
    )
