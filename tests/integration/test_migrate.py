"""`m10 db migrate`: re-runnable, safe concurrently, refuses edited files."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from devenv.services import Postgres
from m10jobs.edges.migrate import (
    COMMENT_EDITS,
    MIGRATIONS_DIR,
    CommentEdit,
    Migration,
    code_checksum,
    migrate,
)
from m10jobs.errors import ConfigError

_n = itertools.count()


@pytest.fixture
def empty_dsn(pg: Postgres) -> str:
    name = f"empty{os.getpid()}_{next(_n)}"
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return pg.dsn_for(name)


def schema_state(dsn: str) -> tuple[list[Any], list[Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as c:
        applied = c.execute(
            "SELECT version, checksum FROM m10_recovery.schema_migrations ORDER BY version"
        ).fetchall()
        objects = c.execute("""
            SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n
              ON n.oid = c.relnamespace WHERE n.nspname = 'm10_recovery' ORDER BY 1
        """).fetchall()
    return applied, objects


def test_migrate_twice_gives_the_same_result(cli: Any, env: dict[str, str], empty_dsn: str) -> None:
    env = {**env, "M10_DATABASE_URL": empty_dsn}
    first = cli("m10", "db", "migrate", env=env)
    assert first.returncode == 0, first.stderr
    state = schema_state(empty_dsn)
    second = cli("m10", "db", "migrate", env=env)
    assert second.returncode == 0 and "up to date" in second.stdout
    assert schema_state(empty_dsn) == state
    assert len(state[0]) == len(list(MIGRATIONS_DIR.glob("*.sql")))


def test_two_migrators_at_once_give_the_same_result(
    env: dict[str, str], empty_dsn: str, dsn: str
) -> None:
    from tests.conftest import BIN

    env = {**env, "M10_DATABASE_URL": empty_dsn}
    procs = [
        subprocess.Popen(
            [str(BIN / "m10"), "db", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    outs = sorted(r[0].strip() for r in results)
    assert outs[0].startswith("applied") and outs[1] == "schema is up to date"
    assert schema_state(empty_dsn)[1] == schema_state(dsn)[1]  # same as the template's


def test_an_edited_applied_migration_is_refused(empty_dsn: str, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    with psycopg.connect(empty_dsn, autocommit=True, row_factory=dict_row) as c:
        migrate(c, migrations)
        edited = sorted(migrations.glob("*.sql"))[0]
        edited.write_text(edited.read_text() + "\n-- sneaky edit\n")
        (migrations / "999_new.sql").write_text("CREATE TABLE m10_recovery.never (x int);")
        with pytest.raises(ConfigError, match=f"{edited.name} was edited"):
            migrate(c, migrations)
        assert c.execute("SELECT to_regclass('m10_recovery.never') AS t").fetchone()["t"] is None


def test_a_recorded_comment_edit_is_accepted_and_a_statement_change_still_refused(
    empty_dsn: str, tmp_path: Path
) -> None:
    """A database migrated with a file's old bytes takes the file whose comments were
    corrected (COMMENT_EDITS vouches for it), and refuses it once a statement changes."""
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    first = sorted(migrations.glob("*.sql"))[0]
    with psycopg.connect(empty_dsn, autocommit=True, row_factory=dict_row) as c:
        migrate(c, migrations)  # applied with the file as it is now
        old_checksum = Migration(first.stem, first).checksum
        first.write_text("-- a corrected comment\n" + first.read_text().replace("\n--", "\n-- x"))
        edits = {
            first.stem: (CommentEdit(applied=old_checksum, code=code_checksum(first.read_text())),)
        }
        assert old_checksum != Migration(first.stem, first).checksum
        with pytest.raises(ConfigError, match="was edited"):  # not vouched for
            migrate(c, migrations, comment_edits={})
        assert migrate(c, migrations, comment_edits=edits) == []

        first.write_text(first.read_text() + "\nCREATE TABLE m10_recovery.sneaky (x int);\n")
        with pytest.raises(ConfigError, match=f"{first.name} was edited"):
            migrate(c, migrations, comment_edits=edits)
        assert c.execute("SELECT to_regclass('m10_recovery.sneaky') AS t").fetchone()["t"] is None


def test_a_database_holding_a_recorded_earlier_checksum_takes_the_shipped_files(
    empty_dsn: str, tmp_path: Path
) -> None:
    """Every COMMENT_EDITS entry: a database that applied the earlier bytes (its
    schema_migrations row says so) migrates cleanly with the shipped migrations, and
    refuses the same file with one statement changed."""
    assert COMMENT_EDITS
    with psycopg.connect(empty_dsn, autocommit=True, row_factory=dict_row) as c:
        migrate(c)
        for version, edits in COMMENT_EDITS.items():
            for edit in edits:
                c.execute(
                    "UPDATE m10_recovery.schema_migrations SET checksum = %s WHERE version = %s",
                    (edit.applied, version),
                )
                assert migrate(c) == []
        migrations = tmp_path / "migrations"
        shutil.copytree(MIGRATIONS_DIR, migrations)
        for version in COMMENT_EDITS:
            f = migrations / f"{version}.sql"
            f.write_text(f.read_text().replace("86400", "86401", 1) + "\nSELECT 1;\n")
            with pytest.raises(ConfigError, match=f"{f.name} was edited"):
                migrate(c, migrations)


def test_a_no_transaction_file_builds_indexes_concurrently_and_heals_a_broken_build(
    empty_dsn: str, tmp_path: Path
) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    with psycopg.connect(empty_dsn, autocommit=True, row_factory=dict_row) as c:
        migrate(c, migrations)
        # an earlier, interrupted concurrent build left an INVALID index of that name
        c.execute(
            "INSERT INTO m10_recovery.outbox (event_type, payload) "
            "SELECT 'dup', '{}' FROM generate_series(1, 2)"
        )
        with pytest.raises(psycopg.errors.UniqueViolation):
            c.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY outbox_by_type "
                "ON m10_recovery.outbox (event_type)"
            )
        c.execute(
            "DELETE FROM m10_recovery.outbox WHERE id = (SELECT max(id) FROM m10_recovery.outbox)"
        )
        (migrations / "998_concurrent.sql").write_text(
            "-- m10: no-transaction\n-- a comment; with a semicolon\n"
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS outbox_by_type\n"
            "    ON m10_recovery.outbox (event_type);\n"
            "COMMENT ON INDEX m10_recovery.outbox_by_type IS 'x; y';  -- trailing\n"
        )
        assert migrate(c, migrations) == ["998_concurrent"]
        row = c.execute(
            "SELECT i.indisvalid, obj_description(i.indexrelid) AS d "
            "FROM pg_index i WHERE i.indexrelid = "
            "'m10_recovery.outbox_by_type'::regclass"
        ).fetchone()
        assert row == {"indisvalid": True, "d": "x; y"}


def test_a_migration_waiting_for_a_lock_never_blocks_producers_for_long(
    empty_dsn: str, tmp_path: Path
) -> None:
    """A long reader holds the outbox; the migration's ALTER must not queue producers
    (enqueue_outbox) behind it: it retries with a short lock_timeout, then succeeds."""
    import threading
    import time

    from m10jobs.edges.migrate import LockPolicy

    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    with psycopg.connect(empty_dsn, autocommit=True, row_factory=dict_row) as c:
        migrate(c, migrations)
    (migrations / "999_alter.sql").write_text(
        "ALTER TABLE m10_recovery.outbox ADD COLUMN note text;\n"
    )
    reader = psycopg.connect(empty_dsn)
    reader.execute("SELECT count(*) FROM m10_recovery.outbox")  # AccessShare, held open
    done: list[Any] = []

    def run_migration() -> None:
        with psycopg.connect(empty_dsn, autocommit=True, row_factory=dict_row) as c:
            done.append(
                migrate(
                    c, migrations, locks=LockPolicy(timeout_ms=200, retry_for_s=60, pause_s=0.3)
                )
            )

    t = threading.Thread(target=run_migration)
    t.start()
    waits = []
    with psycopg.connect(empty_dsn, autocommit=True) as producer:
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            t0 = time.monotonic()
            producer.execute("SELECT m10_recovery.enqueue_outbox('e', '{}')")
            waits.append(time.monotonic() - t0)
            time.sleep(0.05)
    assert not done, "the migration cannot have run while the reader holds the table"
    reader.rollback()
    reader.close()
    t.join(timeout=30)
    assert done == [["999_alter"]]
    assert len(waits) > 10 and max(waits) < 0.6, waits  # at most ~one lock_timeout each


def test_a_lock_that_never_frees_ends_in_one_clear_line(empty_dsn: str, tmp_path: Path) -> None:
    from m10jobs.edges.migrate import LockPolicy
    from m10jobs.errors import TaskFailed

    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    with psycopg.connect(empty_dsn, autocommit=True, row_factory=dict_row) as c:
        migrate(c, migrations)
        (migrations / "999_alter.sql").write_text(
            "ALTER TABLE m10_recovery.outbox ADD COLUMN note text;\n"
        )
        with psycopg.connect(empty_dsn) as reader:
            reader.execute("SELECT count(*) FROM m10_recovery.outbox")
            with pytest.raises(TaskFailed, match=r"999_alter\.sql could not take its lock"):
                migrate(
                    c, migrations, locks=LockPolicy(timeout_ms=100, retry_for_s=0.5, pause_s=0.1)
                )
        assert (
            c.execute(
                "SELECT count(*) AS n FROM m10_recovery.schema_migrations "
                "WHERE version = '999_alter'"
            ).fetchone()["n"]
            == 0
        )
