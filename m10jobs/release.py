"""This release and the database schema it runs on (docs/developing.md "Releases and
schema versions").

A release runs on a range of schema versions (a version is the number of the newest
migration applied, e.g. "160"):
- REQUIRES, the oldest it needs: declared below.  It is at least the newest migration
  in this release that is not marked `-- m10: not-required` (tests/unit/
  test_migration_contract.py checks it).  A database older than that is refused with 78
  and "run `m10 db migrate`" before anything is done.
- knows(), the newest it knows: the newest file in the sql/migrations/ shipped with it,
  read from the package (so it is whatever the build contained, never restated here).
  A database with newer migrations is accepted only when each of them was marked as
  one this release keeps working with (`-- m10: expand`, or `-- m10: compatible-with
  X.Y` with this release at X.Y or later), else refused with 78 naming the release to
  install.  The database keeps those marks (schema_migrations.compatible_with and
  .release, migration 160), so a release can judge migrations it has never seen.

Import-free but for the standard library: every console script's --version and the
runner read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from m10jobs import __version__

VERSION = __version__

REQUIRES = "170"
"""The oldest schema version (migration number) this release's code needs."""


@dataclass(frozen=True)
class Release:
    version: str
    commit: str  # what a clone builds it from (tags are not needed: CI clones may lack them)
    newest_migration: str


PREVIOUS = Release("0.1.0", "48bddc21badbb53a16c279e38a168592939e7f18", "080")
"""The release before this one: tests run its jobs against this release's schema, and
every migration newer than its newest must be expand-only (or marked contract).  The
next release moves this to the current one (its version, commit and newest migration)."""

MIGRATIONS_DIR = Path(__file__).resolve().parent / "sql" / "migrations"
EVERY_RELEASE = "0"
"""compatible_with of an expand-only migration: every older release keeps working."""


def number(version: str) -> str:
    """A migration version ('160_release_contract') as its number ('160')."""
    return version.split("_", 1)[0]


@cache
def knows() -> str:
    """The newest migration number this release ships."""
    return max(number(p.stem) for p in MIGRATIONS_DIR.glob("[0-9][0-9][0-9]_*.sql"))


def schema_range() -> str:
    return f"{REQUIRES}-{knows()}"


def version_line(prog: str) -> str:
    """What every script's --version prints."""
    return (
        f"{prog} (m10jobs) {VERSION}; database schema {schema_range()} "
        f"(needs migration {REQUIRES}, knows up to {knows()})"
    )


def _tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("."):
        digits = "".join(c for c in part if c.isdigit()) or "0"
        parts.append(int(digits))
    return tuple(parts)


def at_least(version: str, floor: str) -> bool:
    """version >= floor, comparing numbers (0.10.0 is after 0.9.1)."""
    a, b = _tuple(version), _tuple(floor)
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)) >= b + (0,) * (width - len(b))


@dataclass(frozen=True)
class Newer:
    """An applied migration newer than a release knows, with the marks the database keeps."""

    version: str
    compatible_with: str | None  # the oldest release still working after it; None: none
    release: str | None  # the release that applied it


def refusal(
    schema: str | None,
    newer: list[Newer],
    *,
    version: str = VERSION,
    requires: str = REQUIRES,
    known: str | None = None,
) -> str | None:
    """Why a release (by default this one) must not run on a database at `schema` whose
    applied migrations past what the release knows are `newer`; None when it may."""
    known = known or knows()
    if schema is None:
        return (
            f"the database has no m10jobs schema, this release needs {requires}: "
            "run `m10 db migrate`"
        )
    if schema < requires:
        return (
            f"database schema is at {schema}, this release needs {requires}: run `m10 db migrate`"
        )
    blocking = [
        n
        for n in newer
        if number(n.version) > known
        and (n.compatible_with is None or not at_least(version, n.compatible_with))
    ]
    if not blocking:
        return None
    first = blocking[0]
    wanted = max((n.release for n in blocking if n.release), key=_tuple, default=None)
    install = f"m10jobs {wanted} or newer" if wanted else "the m10jobs release that ships it"
    return (
        f"database schema is at {schema}, newer than this release ({version}) knows "
        f"(up to {known}), and migration {first.version} does not keep it working: install "
        f"{install} on this host"
    )


_check_pending = False


def check_schema_on_connect() -> None:
    """Make the process's next database connection (edges.db.connect) check the schema
    first: how admin commands are gated without each one saying so (adminkit)."""
    global _check_pending
    _check_pending = True


def take_schema_check() -> bool:
    """Whether this connection must check the schema (then no later one in the process)."""
    global _check_pending
    pending, _check_pending = _check_pending, False
    return pending
