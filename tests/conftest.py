"""Real services for the suite: one PostgreSQL cluster and one redis-server per
session (started by devenv.services, unprivileged when we are root),
a fresh migrated database per test (cloned from a template), and moto's S3
server on loopback for the tests that ask for it."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from devenv.services import S3, Postgres, Redis
from m10jobs.edges.migrate import migrate

BIN = Path(sys.executable).parent
TEMPLATE = "m10_template"
_db_counter = itertools.count()


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import shutil
    import tempfile

    # Not under pytest's tmp (0700, root-owned): the unprivileged postgres
    # account must be able to traverse to its data directory.
    base = Path(tempfile.mkdtemp(prefix="m10-tests-"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg(services_dir: Path) -> Iterator[Postgres]:
    server = Postgres(services_dir / "pg").start()
    with psycopg.connect(server.dsn, autocommit=True, row_factory=dict_row) as c:
        c.execute(f"CREATE DATABASE {TEMPLATE}")
    with psycopg.connect(server.dsn_for(TEMPLATE), autocommit=True, row_factory=dict_row) as c:
        migrate(c)
    yield server
    server.stop()


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
def dsn(pg: Postgres) -> str:
    """A fresh, migrated database for this test."""
    name = f"t{os.getpid()}_{next(_db_counter)}"
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    return pg.dsn_for(name)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        yield c


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
    return {**clean, "M10_DATABASE_URL": dsn, "M10_REDIS_URL": redis_url,
            "M10_STATE_DIR": str(tmp_path / "state"), "M10_LOG_DIR": str(tmp_path / "log"),
            "M10_METRICS_DIR": str(tmp_path / "metrics")}


@pytest.fixture
def s3_env(env: dict[str, str], s3_server: S3) -> dict[str, str]:
    bucket = f"b{os.getpid()}-{next(_db_counter)}"
    return {**env, **S3.env, "M10_R2_ENDPOINT_URL": s3_server.endpoint_url,
            "M10_R2_BUCKET": bucket}


def run_cli(script: str, *args: str, env: dict[str, str], timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run an installed console script as systemd would: a separate process."""
    return subprocess.run([str(BIN / script), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, input=input)


@pytest.fixture
def cli(env: dict[str, str]) -> Any:
    def call(script: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return run_cli(script, *args, env=kw.pop("env", env), **kw)

    return call
