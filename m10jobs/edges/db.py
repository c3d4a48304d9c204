"""PostgreSQL access: connections and turning driver failures into exit codes.

Every connection is opened by connect() here.  psycopg itself (~100 ms to
import) is also imported by the lease and migrate edges, the runner, and inside
passes that need psycopg.sql or its Jsonb adapter -- never at module level of a
job, so `--help` does not pay for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.errors import LockNotAvailable as LockNotAvailable  # for callers: 55P03
from psycopg.rows import dict_row

from m10jobs.errors import ConfigError, DependencyUnavailable, LeaseLost
from m10jobs.redact import redact

CONNECT_TIMEOUT_S = 5
LEASE_LOST_SQLSTATE = "M10LL"
# The server ended a transaction that sat idle past its lease (Lease and
# assert_lease bound it): a paused holder, nothing committed.
IDLED_OUT_SQLSTATE = "25P03"


def describe(dsn: str) -> str:
    """host:port/dbname for messages, never the password."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the configured database"
    host = info.get("host") or info.get("hostaddr") or "localhost"
    return f"{host}:{info.get('port') or 5432}/{info.get('dbname') or info.get('user') or ''}"


def connect(dsn: str, *, app: str = "m10jobs", autocommit: bool = True,
            **kwargs: Any) -> psycopg.Connection[dict[str, Any]]:
    # a caller's server options (e.g. `m10 cost`'s time zone) come after ours
    options = f"{_options(dsn)} {kwargs.pop('options', '')}".strip()
    try:
        options = _options(dsn, kwargs.pop("options", ""))
        return psycopg.connect(dsn, autocommit=autocommit, row_factory=dict_row,
                               connect_timeout=CONNECT_TIMEOUT_S, application_name=app,
                               options=options, **kwargs)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"database_url is not a valid libpq URI/conninfo: "
                          f"{redact(str(exc))}") from None
    except psycopg.OperationalError as exc:
        raise unavailable(dsn, exc) from None


def _options(dsn: str, extra: str = "") -> str:
    """The DSN's own server options, the caller's, then jit=off: our statements are
    short, and JIT compiling one whose cost estimate looks big (the outbox claim's, on
    a large table) took 0.2-1 s, many times the query itself."""
    try:
        own = conninfo_to_dict(dsn).get("options") or ""
    except psycopg.ProgrammingError:
        own = ""  # connect() reports the bad DSN
    return " ".join(part for part in (str(own), extra, "-c jit=off") if part)


def unavailable(dsn: str, exc: BaseException) -> DependencyUnavailable:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return DependencyUnavailable(
        f"PostgreSQL at {describe(dsn)} is unreachable: {redact(reason)}; "
        "check that the server is up and M10_DATABASE_URL is right"
    )


def is_connection_error(exc: BaseException) -> bool:
    """Lost or refused connection, as opposed to an error in a statement."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


@contextlib.contextmanager
def translated(dsn: str) -> Iterator[None]:
    """Map driver exceptions to M10Errors: lost connection -> 69, lost lease -> 1."""
    try:
        yield
    except psycopg.Error as exc:
        state = getattr(exc, "sqlstate", None)
        if state == LEASE_LOST_SQLSTATE:
            raise LeaseLost(f"{exc.diag.message_primary}; nothing was committed") from None
        if state == IDLED_OUT_SQLSTATE:
            raise LeaseLost("PostgreSQL ended a transaction of this pass that sat idle "
                            "past its lease (was this process paused?); nothing was "
                            "committed") from None
        if is_connection_error(exc):
            raise unavailable(dsn, exc) from None
        raise
