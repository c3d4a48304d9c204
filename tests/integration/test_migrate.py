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
from m10jobs.edges.migrate import MIGRATIONS_DIR, migrate
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
        applied = c.execute("SELECT version, checksum FROM m10_recovery.schema_migrations "
                            "ORDER BY version").fetchall()
        objects = c.execute("""
            SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n
              ON n.oid = c.relnamespace WHERE n.nspname = 'm10_recovery' ORDER BY 1
        """).fetchall()
    return applied, objects


def test_migrate_twice_gives_the_same_result(cli: Any, env: dict[str, str],
                                             empty_dsn: str) -> None:
    env = {**env, "M10_DATABASE_URL": empty_dsn}
    first = cli("m10", "db", "migrate", env=env)
    assert first.returncode == 0, first.stderr
    state = schema_state(empty_dsn)
    second = cli("m10", "db", "migrate", env=env)
    assert second.returncode == 0 and "up to date" in second.stdout
    assert schema_state(empty_dsn) == state
    assert len(state[0]) == len(list(MIGRATIONS_DIR.glob("*.sql")))


def test_two_migrators_at_once_give_the_same_result(env: dict[str, str], empty_dsn: str,
                                                    dsn: str) -> None:
    from tests.conftest import BIN

    env = {**env, "M10_DATABASE_URL": empty_dsn}
    procs = [subprocess.Popen([str(BIN / "m10"), "db", "migrate"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
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
