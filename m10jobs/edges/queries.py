"""Named queries from sql/queries.sql, parsed once (procrastinate's convention)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_HEADER = re.compile(r"^-- ([a-z0-9_]+) --$", re.MULTILINE)


@cache
def _load(path: Path) -> dict[str, str]:
    text = path.read_text()
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        sql = "\n".join(line for line in body.strip().splitlines()
                        if not line.startswith("--")).strip()
        queries[name] = sql
    return queries


def query(name: str, file: str = "queries.sql") -> str:
    """The SQL of one named query; KeyError names what is missing."""
    return _load(SQL_DIR / file)[name]
