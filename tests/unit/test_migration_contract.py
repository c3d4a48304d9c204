"""Expand/contract (docs/developing.md "Releases and schema versions"): every migration
newer than the previous release only adds, so the previous release keeps running on the
migrated schema (tests/integration/test_previous_release.py runs it), unless it is marked
`-- m10: contract <why>`.  And what this release declares it needs is true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from m10jobs import release
from m10jobs.edges.migrate import LATER_MARKS, Migration, available

# Statements that break a release still running: removing, renaming, retyping, tightening.
FORBIDDEN = {
    "DROP": re.compile(
        r"\bDROP\s+(TABLE|COLUMN|VIEW|MATERIALIZED\s+VIEW|FUNCTION|PROCEDURE|SCHEMA|TYPE|"
        r"TRIGGER|SEQUENCE|CONSTRAINT|DEFAULT|INDEX(?!\s+CONCURRENTLY))\b",
        re.I,
    ),
    "RENAME": re.compile(r"\bRENAME\b", re.I),
    "ALTER ... TYPE": re.compile(r"\bALTER\s+(COLUMN\s+)?\w+\s+(SET\s+DATA\s+)?TYPE\b", re.I),
    "SET NOT NULL": re.compile(r"\bSET\s+NOT\s+NULL\b", re.I),
    "ADD COLUMN ... NOT NULL without DEFAULT": re.compile(
        r"\bADD\s+COLUMN\b(?:(?!,\s*ADD\b|;)[^;])*\bNOT\s+NULL\b(?![^,;]*\bDEFAULT\b)",
        re.I,
    ),
    "TRUNCATE": re.compile(r"\bTRUNCATE\b", re.I),
    "REVOKE": re.compile(r"\bREVOKE\b", re.I),
    "CREATE INDEX without CONCURRENTLY": re.compile(
        r"\bCREATE\s+(UNIQUE\s+)?INDEX\s+(?!CONCURRENTLY)", re.I
    ),
}


def code(m: Migration) -> str:
    return "\n".join(
        line.split("--", 1)[0] for line in m.sql.splitlines() if not line.lstrip().startswith("--")
    )


def violations(m: Migration) -> list[str]:
    text = code(m)
    created = set(re.findall(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([\w.]+)", text, re.I))
    found = []
    for what, pattern in FORBIDDEN.items():
        for hit in pattern.finditer(text):
            if what == "CREATE INDEX without CONCURRENTLY":
                table = re.search(r"\bON\s+(?:ONLY\s+)?([\w.]+)", text[hit.end() :], re.I)
                if table and table.group(1) in created:
                    continue  # a table made in the same migration is empty
            found.append(f"{what}: {text[hit.start() : hit.start() + 60].strip()!r}")
    return found


NEW = [m for m in available() if release.number(m.version) > release.PREVIOUS.newest_migration]


@pytest.mark.parametrize("m", NEW, ids=lambda m: m.version)
def test_new_migrations_only_add_unless_marked_contract(m: Migration) -> None:
    marks = m.marks
    if "contract" in marks:
        assert marks["contract"], f"{m.path.name}: `-- m10: contract` needs a note saying why"
        assert m.compatible_with is None, f"{m.path.name}: a contract migration is not expand"
        return
    if m.version in LATER_MARKS:  # reviewed before marks existed: its note says why
        assert LATER_MARKS[m.version][1]
        return
    assert violations(m) == [], (
        f"{m.path.name} removes, renames or tightens what the previous release "
        f"({release.PREVIOUS.version}) may still use; add instead, and remove in a later "
        "release with `-- m10: contract <why>` (docs/developing.md)"
    )


def test_the_lint_catches_what_it_forbids(tmp_path: Path) -> None:
    bad = {
        "DROP": "ALTER TABLE m10_recovery.outbox DROP COLUMN attempts;",
        "RENAME": "ALTER TABLE m10_recovery.outbox RENAME COLUMN attempts TO tries;",
        "ALTER ... TYPE": "ALTER TABLE m10_recovery.outbox ALTER COLUMN attempts TYPE bigint;",
        "SET NOT NULL": "ALTER TABLE m10_recovery.outbox ALTER COLUMN x SET NOT NULL;",
        "ADD COLUMN ... NOT NULL without DEFAULT": (
            "ALTER TABLE m10_recovery.outbox ADD COLUMN y int NOT NULL;"
        ),
        "CREATE INDEX without CONCURRENTLY": "CREATE INDEX i ON m10_recovery.outbox (id);",
    }
    for what, statement in bad.items():
        path = tmp_path / "999_x.sql"
        path.write_text(f"-- a comment\n{statement}\n")
        assert any(v.startswith(what) for v in violations(Migration("999_x", path))), what
    fine = tmp_path / "998_y.sql"
    fine.write_text(
        "-- m10: expand\nALTER TABLE m10_recovery.outbox ADD COLUMN z int NOT NULL DEFAULT 0,"
        " ADD COLUMN w text;\nCREATE TABLE m10_recovery.t (id int);\n"
        "CREATE INDEX t_idx ON m10_recovery.t (id);\n"
    )
    assert violations(Migration("998_y", fine)) == []


def test_requires_covers_every_migration_the_code_needs() -> None:
    """REQUIRES is at least the newest migration not marked `-- m10: not-required`, and
    no newer than what this release ships."""
    needed = max(release.number(m.version) for m in available() if "not-required" not in m.marks)
    assert needed <= release.REQUIRES, (
        f"m10jobs/release.py REQUIRES is {release.REQUIRES}, but migration {needed} is "
        "needed (mark it `-- m10: not-required` if this release's code runs without it)"
    )
    assert release.knows() >= release.REQUIRES


def test_previous_release_is_older() -> None:
    assert not release.at_least(release.PREVIOUS.version, release.VERSION)
    assert release.PREVIOUS.newest_migration < release.REQUIRES
