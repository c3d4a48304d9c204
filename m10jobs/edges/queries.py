"""Named queries from sql/queries/*.sql, parsed once (procrastinate's convention).

Each file holds one area's queries as `-- name --`, a one-line description,
then the SQL.  Names are unique across files; a duplicate is a programming
error and fails loudly at first use.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Protocol, TypeVar

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_HEADER = re.compile(r"^-- ([a-z0-9_]+) --$", re.MULTILINE)
_Row = TypeVar("_Row", covariant=True)


@cache
def _all() -> dict[str, str]:
    queries: dict[str, str] = {}
    for path in sorted((SQL_DIR / "queries").glob("*.sql")):
        parts = _HEADER.split(path.read_text())
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in queries:
                raise RuntimeError(f"query {name} is defined twice (second in {path.name})")
            queries[name] = "\n".join(
                line for line in body.strip().splitlines() if not line.startswith("--")
            ).strip()
    return queries


def query(name: str) -> str:
    """The SQL of one named query."""
    return _all()[name]


class _Cursor(Protocol[_Row]):
    def fetchone(self) -> _Row | None: ...


def one(cursor: _Cursor[_Row]) -> _Row:
    """The row of a statement that always returns one (an aggregate, a function call,
    RETURNING of an upsert): fetchone() types it optional, and none is a bug, not data."""
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("a statement that always returns a row returned none")
    return row


_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")


@cache
def positional(name: str) -> tuple[str, tuple[str, ...]]:
    """A named query with libpq's own $1, $2 placeholders (for edges.leaseprobe, which
    talks to libpq without the driver), and the parameter names in that order."""
    names: list[str] = []

    def number(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return "%"
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    return _PLACEHOLDER.sub(number, query(name)), tuple(names)
