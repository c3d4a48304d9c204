"""Databases at a chosen schema version, and the previous release's code from git history
(m10jobs.release.PREVIOUS: its commit, never a tag, which a CI clone may lack)."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from devenv.services import Postgres
from m10jobs.edges.migrate import MIGRATIONS_DIR, migrate
from m10jobs.release import PREVIOUS, Release, number

ROOT = Path(__file__).resolve().parent.parent
_n = itertools.count()


def database_at(pg: Postgres, upto: str | None = None, tmp: Path | None = None) -> str:
    """A new database migrated with this release's migrations up to number `upto` (all
    when None); its DSN."""
    name = f"rel{os.getpid()}_{next(_n)}"
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    dsn = pg.dsn_for(name)
    directory = MIGRATIONS_DIR
    if upto is not None:
        assert tmp is not None
        directory = tmp / f"migrations-{name}"
        directory.mkdir()
        for f in MIGRATIONS_DIR.glob("*.sql"):
            if number(f.stem) <= upto:
                shutil.copy(f, directory / f.name)
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        migrate(c, directory)
    return dsn


def behind() -> str:
    """The newest migration number below what this release needs: 'one migration behind'."""
    from m10jobs.release import REQUIRES

    return max(number(f.stem) for f in MIGRATIONS_DIR.glob("*.sql") if number(f.stem) < REQUIRES)


def history_missing(release: Release = PREVIOUS) -> str | None:
    """Why the release's commit cannot be read from this checkout (a shallow clone), or None."""
    if shutil.which("git") is None:
        return "git is not installed"
    probe = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{release.commit}^{{commit}}"],
        capture_output=True,
    )
    if probe.returncode != 0:
        return (
            f"commit {release.commit[:12]} of release {release.version} is not in this "
            "checkout's history (a shallow clone? `git fetch --unshallow`)"
        )
    return None


def extract(release: Release, into: Path) -> Path:
    """The release's tree (`git archive` of its commit) under `into`; run its code with
    PYTHONPATH=<that tree> (the dependencies are this venv's)."""
    tree = into / f"m10jobs-{release.version}"
    tree.mkdir(parents=True)
    archive = into / "tree.tar"
    subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), release.commit],
        check=True,
    )
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="tar")
    return tree
