"""Issue 22: a release runs only on the schema range it declares (m10jobs.release).

Every job and admin command that touches the database, against a database one migration
behind what this release needs: 78 with the migrate hint, and nothing published, deleted or
written.  A database with an unknown newer migration: 78 naming the release to install,
unless the migration is marked as one this release keeps working with."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg.rows import dict_row

from devenv.services import Postgres
from m10jobs import release
from m10jobs.registry import jobs
from tests.outbox_support import enqueue
from tests.release_support import behind, database_at

HINT = f"this release needs {release.REQUIRES}: run `m10 db migrate`"

# Every admin command that touches the database, with the arguments it needs.  The others
# (db migrate/status/schema look at the schema itself; jobs, config, units, flows without
# --check, postflight and retention show read only local files) are exempt; so is canary
# status while there is no report (it then reads none), else gated like the rest.
ADMIN = [
    ("status",),
    ("status", "--json"),
    ("locks", "list"),
    ("locks", "release", "m10:outbox_processor", "--force"),
    ("cost", "show", "t1"),
    ("cost", "status"),
    ("dl", "list"),
    ("dl", "replay", "1"),
    ("dl", "discard", "1", "--reason", "test"),
    ("flows", "--check"),
    ("outbox", "status"),
    ("outbox", "problems"),
    ("outbox", "retry", "1"),
    ("retention", "history"),
]


def _files(env: dict[str, str]) -> list[Path]:
    return [
        p
        for key in ("M10_LOG_DIR", "M10_STATE_DIR")
        for p in (Path(env[key]).rglob("*") if Path(env[key]).exists() else [])
    ]


def _rows(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as c:
        return c.execute(
            "SELECT id, status, attempts FROM m10_recovery.outbox ORDER BY id"
        ).fetchall()


def test_every_job_and_admin_command_refuses_a_schema_one_behind(
    pg: Postgres, env: dict[str, str], cli: Any, tmp_path: Path, redis_url: str
) -> None:
    dsn = database_at(pg, behind(), tmp_path)
    env = {**env, "M10_DATABASE_URL": dsn}
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        enqueue(c, 3)
        c.execute(
            "INSERT INTO m10_recovery.distributed_locks (lock_name, holder_id, fencing_token,"
            " acquired_at, expires_at) VALUES ('m10:outbox_processor', 'ghost:1:r', 1,"
            " now() - interval '2 hours', now() - interval '1 hour')"
        )
        locks_before = c.execute("SELECT * FROM m10_recovery.distributed_locks").fetchall()
    outbox_before = _rows(dsn)
    runs = [(j.script,) for j in jobs()] + [("m10", *a) for a in ADMIN]
    for script, *args in runs:
        r = cli(script, *args, env=env)
        errors = [line for line in r.stderr.splitlines() if HINT in line]
        assert r.returncode == 78, (script, args, r.returncode, r.stderr[-600:])
        assert errors, (script, args, r.stderr[-600:])
        assert "Traceback" not in r.stderr
    assert _rows(dsn) == outbox_before  # nothing published, retried or dead-lettered
    assert redis.Redis.from_url(redis_url).dbsize() == 0  # no stream, no dedup key
    assert _files(env) == [], "a refused run wrote into the log or state directory"
    with psycopg.connect(dsn, row_factory=dict_row) as c:
        assert c.execute("SELECT * FROM m10_recovery.distributed_locks").fetchall() == locks_before


def test_one_line_names_the_versions(
    pg: Postgres, env: dict[str, str], cli: Any, tmp_path: Path
) -> None:
    dsn = database_at(pg, behind(), tmp_path)
    r = cli("m10-outbox-processor", env={**env, "M10_DATABASE_URL": dsn, "M10_LOG_FORMAT": "text"})
    assert r.returncode == 78
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert f"database schema is at {behind()}, {HINT}" in lines[0]


def _future(dsn: str, compatible_with: str | None, by: str = "9.1.0") -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            "INSERT INTO m10_recovery.schema_migrations (version, checksum, compatible_with,"
            " release) VALUES ('999_from_the_future', 'x', %s, %s)",
            (compatible_with, by),
        )


@pytest.mark.parametrize(
    ("compatible_with", "runs"),
    [(None, False), ("9.0", False), (release.VERSION, True), (release.EVERY_RELEASE, True)],
)
def test_a_newer_schema_runs_only_where_marked_compatible(
    dsn: str, env: dict[str, str], cli: Any, compatible_with: str | None, runs: bool
) -> None:
    _future(dsn, compatible_with)
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        enqueue(c, 1)
    for script, *args in [("m10-outbox-processor",), ("m10", "outbox", "status")]:
        r = cli(script, *args)
        if runs:
            assert r.returncode == 0, (script, r.stderr[-600:])
        else:
            assert r.returncode == 78, (script, r.stderr[-600:])
            assert "database schema is at 999" in r.stderr
            assert "install m10jobs 9.1.0 or newer on this host" in r.stderr
    assert [row["status"] for row in _rows(dsn)] == (["published"] if runs else ["pending"])


def test_db_status_names_version_pending_and_verdict(
    pg: Postgres, env: dict[str, str], cli: Any, tmp_path: Path
) -> None:
    dsn = database_at(pg, behind(), tmp_path)
    r = cli("m10", "db", "status", env={**env, "M10_DATABASE_URL": dsn})
    assert r.returncode == 78, r.stderr
    assert f"schema        at {behind()}" in r.stdout
    assert f"{release.REQUIRES}_" in r.stdout and "run `m10 db migrate`" in r.stdout
    migrated = cli("m10", "db", "migrate", env={**env, "M10_DATABASE_URL": dsn})
    assert migrated.returncode == 0, migrated.stderr
    r = cli("m10", "db", "status", env={**env, "M10_DATABASE_URL": dsn})
    assert r.returncode == 0 and "pending       none" in r.stdout, r.stdout
    assert "this release runs on it" in r.stdout


def test_migrate_keeps_marks_and_status_names_a_host_left_behind(
    dsn: str, env: dict[str, str], cli: Any
) -> None:
    with psycopg.connect(dsn, row_factory=dict_row) as c:
        marks = {
            r["version"]: r["compatible_with"]
            for r in c.execute(
                "SELECT version, compatible_with FROM m10_recovery.schema_migrations"
            )
        }
    assert marks["160_release_contract"] == release.EVERY_RELEASE  # `-- m10: expand`
    assert marks["090_dead_letter_refusal_discard"] == release.EVERY_RELEASE  # LATER_MARKS
    assert marks["080_lease_stamps_after_wait"] is None
    assert cli("m10-outbox-processor").returncode == 0
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            "INSERT INTO m10_recovery.hosts (host, release, requires, knows)"
            " VALUES ('old-host', '0.1.0', '080', '080')"
        )
        # a migration this release keeps working with, but 0.1.0 does not
        c.execute(
            "INSERT INTO m10_recovery.schema_migrations (version, checksum,"
            " compatible_with, release) VALUES ('999_test', 'x', %s, %s)",
            (release.VERSION, release.VERSION),
        )
    r = cli("m10", "status")
    assert "SCHEMA" in r.stdout
    assert f"{socket.gethostname()} {release.VERSION} (" in r.stdout  # recorded by the run
    assert "host old-host runs m10jobs 0.1.0, older than the schema" in r.stdout


def test_version_names_release_and_schema_range(cli: Any) -> None:
    for script in ("m10", "m10-maintenance"):
        r = cli(script, "--version")
        assert r.returncode == 0
        assert r.stdout == (
            f"{script} (m10jobs) {release.VERSION}; database schema "
            f"{release.REQUIRES}-{release.knows()} (needs migration {release.REQUIRES}, "
            f"knows up to {release.knows()})\n"
        )


def test_a_m10_ops_login_is_refused_before_160_and_runs_after(
    pg: Postgres, env: dict[str, str], cli: Any, tmp_path: Path
) -> None:
    """Production's shape: migrations run as the superuser, jobs as a member of m10_ops, who
    may read schema_migrations only once migration 160 granted it."""
    dsn = database_at(pg, behind(), tmp_path)
    role = f"m10_ops_login_{tmp_path.name[-12:].replace('-', '_')}"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"CREATE ROLE {role} LOGIN IN ROLE m10_ops")
    as_ops = {**env, "M10_DATABASE_URL": psycopg.conninfo.make_conninfo(dsn, user=role)}
    r = cli("m10-outbox-processor", env=as_ops)
    assert r.returncode == 78 and "run `m10 db migrate`" in r.stderr, r.stderr
    assert cli("m10", "db", "migrate", env={**env, "M10_DATABASE_URL": dsn}).returncode == 0
    r = cli("m10-outbox-processor", env=as_ops)
    assert r.returncode == 0, r.stderr
