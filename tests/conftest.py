"""Real services for the suite.

PostgreSQL: pytest-postgresql provides the databases.  Its no-process fixture
(`pg_template`) is handed our own server (`pg`, started by devenv.services:
PostgreSQL refuses to run as root, so as root initdb/pg_ctl run unprivileged
through setpriv -- the one thing its process fixture cannot do) and loads the
migrated schema once into its template database; for every test its
DatabaseJanitor clones a fresh database from that template (`dsn`, `conn`).
redis-server and moto's S3 server run once per session on loopback.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from pytest_postgresql import factories
from pytest_postgresql.executors import NoopExecutor
from pytest_postgresql.janitor import DatabaseJanitor

from devenv.services import S3, PgBouncer, Postgres, Redis
from m10jobs.edges.migrate import migrate
from tests.nobody_support import nobody_cannot_run, traversable_venv

BIN = Path(sys.executable).parent
_counter = itertools.count()


@pytest.fixture(scope="session")
def services_dir() -> Iterator[Path]:
    # Not under pytest's tmp (0700, root-owned): the unprivileged postgres
    # account must be able to traverse to its data directory.
    base = Path(tempfile.mkdtemp(prefix="m10-tests-"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg(services_dir: Path) -> Iterator[Postgres]:
    """The PostgreSQL server (started unprivileged when we are root)."""
    server = Postgres(services_dir / "pg").start()
    yield server
    server.stop()


@dataclass(frozen=True)
class _Server:
    """What postgresql_noproc(depends_on=...) reads from the server it is handed."""

    port: int
    host: str = "127.0.0.1"
    user: str = "postgres"
    password: str | None = None
    options: str = ""
    maintenance_dbname: str = "postgres"
    template_dbname: str | None = None  # build our template from scratch, not from another


@pytest.fixture(scope="session")
def pg_server(pg: Postgres) -> _Server:
    return _Server(pg.port)


def load_schema(
    *, host: str, port: int, user: str, dbname: str, password: str | None, **_: Any
) -> None:
    """pytest-postgresql loader: migrate the template database once per session."""
    with psycopg.connect(
        host=host,
        port=port,
        user=user,
        dbname=dbname,
        password=password,
        autocommit=True,
        row_factory=dict_row,
    ) as c:
        migrate(c)


pg_template = factories.postgresql_noproc(
    dbname="m10_test", load=[load_schema], depends_on="pg_server"
)


@pytest.fixture
def dsn(pg: Postgres, pg_template: NoopExecutor) -> str:
    """A fresh, migrated database for this test, cloned from the template.

    Not dropped after the test (the janitor's __exit__): the whole cluster is
    thrown away with the session, and a drop per test would add about a quarter
    to each test's setup."""
    name = f"{pg_template.dbname}_{next(_counter)}"
    DatabaseJanitor(
        user=pg_template.user,
        host=pg_template.host,
        port=pg_template.port,
        dbname=name,
        template_dbname=pg_template.template_dbname,
    ).init()
    return pg.dsn_for(name)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        yield c


@pytest.fixture(scope="session")
def redis_server(services_dir: Path) -> Iterator[Redis]:
    server = Redis(services_dir / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(services_dir: Path) -> Iterator[S3]:
    server = S3(services_dir / "s3").start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: Redis) -> str:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def env(dsn: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for running the console scripts against this test's services."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("M10_")}
    return {
        **clean,
        "M10_DATABASE_URL": dsn,
        "M10_REDIS_URL": redis_url,
        "M10_STATE_DIR": str(tmp_path / "state"),
        "M10_LOG_DIR": str(tmp_path / "log"),
        "M10_METRICS_DIR": str(tmp_path / "metrics"),
    }


@pytest.fixture
def s3_env(env: dict[str, str], s3_server: S3) -> dict[str, str]:
    bucket = f"b{os.getpid()}-{next(_counter)}"
    return {**env, **S3.env, "M10_R2_ENDPOINT_URL": s3_server.endpoint_url, "M10_R2_BUCKET": bucket}


def run_cli(
    script: str, *args: str, env: dict[str, str], timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run an installed console script as systemd would: a separate process."""
    return subprocess.run(
        [str(BIN / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


@pytest.fixture
def cli(env: dict[str, str]) -> Any:
    def call(script: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return run_cli(script, *args, env=kw.pop("env", env), **kw)

    return call


# --- PostgreSQL HA (tests/pg_ha_support.py): servers of their own, to restart and promote --


@pytest.fixture
def ha_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="m10-ha-"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def primary(ha_dir: Path) -> Iterator[Postgres]:
    """A PostgreSQL of this test's own (it may restart it, crash it, or fail it over)."""
    server = Postgres(ha_dir / "primary").start()
    yield server
    server.stop()


@pytest.fixture
def standby(primary: Postgres, ha_dir: Path) -> Iterator[Postgres]:
    """A streaming standby of `primary` (pg_basebackup -R); promote() fails over to it."""
    server = primary.standby(ha_dir / "standby")
    yield server
    server.stop()


@pytest.fixture
def pgbouncer(pg: Postgres, services_dir: Path) -> Iterator[Any]:
    """start(pool_mode) -> a PgBouncer in front of the session's PostgreSQL (its files
    where the unprivileged account it runs as can reach them)."""
    started: list[PgBouncer] = []

    def start(pool_mode: str) -> PgBouncer:
        base = services_dir / f"pgbouncer-{next(_counter)}"
        bouncer = PgBouncer(base, pg, pool_mode).start()
        started.append(bouncer)
        return bouncer

    yield start
    for bouncer in started:
        bouncer.stop()


@pytest.fixture(scope="session")
def nobody_bin() -> Iterator[Path]:
    """Where `nobody` starts the jobs from: our venv's bin, or a traversable copy.

    A checkout in a private directory (mode 0700: root's home, `mktemp -d`) keeps
    `nobody` out of .venv/bin; the copy lives in a 0755 temp dir.  If even the copy
    cannot run (the base interpreter itself is private, as a pyenv under /root is on
    a stock kernel), the tests that run jobs as `nobody` skip, saying why."""
    why = nobody_cannot_run(BIN)
    if why is None:
        yield BIN
        return
    base = Path(tempfile.mkdtemp(prefix="m10-nobody-venv-"))
    try:
        bin_dir = traversable_venv(base)
        still = nobody_cannot_run(bin_dir)
        if still is not None:
            pytest.skip(f"nobody cannot run {BIN} ({why}) nor a copy of it ({still})")
        yield bin_dir
    finally:
        shutil.rmtree(base, ignore_errors=True)
