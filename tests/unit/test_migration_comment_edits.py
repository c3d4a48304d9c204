"""COMMENT_EDITS (m10jobs/edges/migrate.py) vouches only for comment-only edits.

Each entry's `code` must be the shipped file's code checksum (else the migrator
would refuse the file on every database that applied the earlier bytes), and,
where the git history is at hand, the earlier bytes it names must exist in the
file's history and differ from the shipped file in comment lines only."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from m10jobs.edges.migrate import COMMENT_EDITS, MIGRATIONS_DIR, Migration, code_checksum

ROOT = Path(__file__).resolve().parents[2]


def test_code_checksum_ignores_comment_lines_only() -> None:
    base = "-- header\nCREATE TABLE t (x int);  -- trailing\n\nSELECT 1;\n"
    assert code_checksum(base) == code_checksum("-- other header\n  -- more\n" + base)
    assert code_checksum(base) != code_checksum(base.replace("x int", "x bigint"))
    assert code_checksum(base) != code_checksum(base.replace("trailing", "changed"))


@pytest.mark.parametrize("version", sorted(COMMENT_EDITS))
def test_each_entry_matches_the_shipped_file(version: str) -> None:
    m = Migration(version, MIGRATIONS_DIR / f"{version}.sql")
    assert m.path.exists()
    for edit in COMMENT_EDITS[version]:
        assert edit.code == m.code_checksum
        assert edit.applied != m.checksum


@pytest.mark.parametrize("version", sorted(COMMENT_EDITS))
def test_each_recorded_earlier_content_is_in_the_history(version: str) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("no git history at hand (an installed package or a tarball)")
    rel = f"sql/migrations/{version}.sql"
    revs = subprocess.run(
        ["git", "-C", str(ROOT), "log", "--format=%H", "--", rel],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if not revs:
        pytest.skip("shallow clone without this file's history")
    found = {}
    for rev in revs:
        blob = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:{rel}"], capture_output=True, check=False
        ).stdout
        found[hashlib.sha256(blob).hexdigest()] = blob.decode()
    for edit in COMMENT_EDITS[version]:
        if edit.applied not in found:
            pytest.skip("history too shallow to hold the earlier content")
        assert code_checksum(found[edit.applied]) == edit.code
