"""PostgreSQL access: connections and turning driver failures into exit codes.

Every connection is opened by connect() here.  psycopg itself (~100 ms to
import) is also imported by the lease and migrate edges, inside the runner's
functions, and at the top of the pass modules that use a driver type (psycopg.sql,
the Jsonb adapter, type info: canary, cost, dead letters, matviews, outbox).  Never
by a job's declaration (jobs/<flow>/__init__.py, settings.py): pass modules are
imported only when their pass runs, so `--help` and a start whose lease is busy
do not pay for it (tests/unit/test_startup_imports.py).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.errors import LockNotAvailable as LockNotAvailable  # for callers: 55P03
from psycopg.rows import dict_row

from m10jobs import release
from m10jobs.edges import conninfo
from m10jobs.edges.conninfo import CONNECT_TIMEOUT_S as CONNECT_TIMEOUT_S
from m10jobs.edges.queries import one, query
from m10jobs.errors import ConfigError, DependencyUnavailable, LeaseLost, M10Error
from m10jobs.redact import redact

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


# libpq reports a refused login only in its message text (no SQLSTATE at connect time).
_REFUSED_LOGIN = re.compile(
    r"authentication failed|no password supplied|role \"[^\"]*\" does "
    r"not exist|not permitted to log in|no pg_hba\.conf entry"
)


def check_dsn(dsn: str) -> None:
    """ConfigError (78) for a DSN libpq would only reject at connect time (reported as
    'unreachable', 69): the rules in edges.conninfo (an unencoded '@' in the password
    would have its tail printed as the host name)."""

    def bad(what: str) -> ConfigError:
        return ConfigError(
            f"database_url (M10_DATABASE_URL) {what}; fix it (e.g. "
            "postgresql://user:pass@host:5432/db, special characters in the "
            "password percent-encoded)"
        )

    try:
        dsn.encode()
    except UnicodeEncodeError:  # a byte the environment held that is not UTF-8
        raise bad("holds a byte that is not UTF-8 (percent-encode it, e.g. %FF)") from None
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise bad(f"is not a valid libpq URI/conninfo: {redact(str(exc))}") from None
    wrong = conninfo.problem(info)
    if wrong:
        raise bad(wrong)


def connect(
    dsn: str, *, app: str = "m10jobs", autocommit: bool = True, **kwargs: Any
) -> psycopg.Connection[dict[str, Any]]:
    """A connection set up for the jobs: jit off, and behind a PgBouncer
    (database_pooling) no startup `options` (it refuses them), and with transaction
    pooling no prepared statements (a later transaction may run on another server
    session, which does not have them)."""
    check_dsn(dsn)
    extra = kwargs.pop("options", "")
    try:
        if conninfo.pooled():
            _check_pooled_dsn(dsn, extra)
        else:
            kwargs["options"] = _options(dsn, extra)
        if conninfo.transaction_pooled():
            kwargs["prepare_threshold"] = None
        conn = psycopg.connect(
            dsn,
            autocommit=autocommit,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=app,
            **kwargs,
        )
    except psycopg.ProgrammingError as exc:
        raise ConfigError(
            f"database_url is not a valid libpq URI/conninfo: {redact(str(exc))}"
        ) from None
    except psycopg.OperationalError as exc:
        raise unavailable(dsn, exc) from None
    if conninfo.POOLING == "session":  # the session is ours until we disconnect
        with translated(dsn):
            conn.execute("SET jit = off")
    if release.take_schema_check():  # an admin command's first connection (adminkit)
        from m10jobs.edges import schemaversion

        try:
            with translated(dsn):
                schemaversion.gate(conn)
        except BaseException:
            conn.close()
            raise
    return conn


def require_primary(conn: psycopg.Connection[Any], dsn: str) -> None:
    """At pass start: a standby (read-only) would fail every write mid-pass; say why at
    once (69: after a failover, the old address may lead to a standby or a demoted
    primary until the DSN lists every host)."""
    with translated(dsn):
        standby = one(conn.execute(query("db_is_standby")))["standby"]
    if standby:
        raise DependencyUnavailable(
            f"PostgreSQL at {describe(dsn)} is a standby (read-only); point "
            "M10_DATABASE_URL at the primary, or list every host with "
            "target_session_attrs=read-write so that libpq finds it"
        )


def _check_pooled_dsn(dsn: str, extra: str) -> None:
    """ConfigError unless the DSN can go through PgBouncer: no server `options`."""
    own = conninfo_to_dict(dsn).get("options")
    if own or extra:
        raise ConfigError(
            "database_url sets server options (options=...), which PgBouncer refuses "
            f"(database_pooling = {conninfo.POOLING!r}); remove them from the DSN and set "
            "them for the role instead (ALTER ROLE ... SET name = value)"
        )


def _options(dsn: str, extra: str = "") -> str:
    """The DSN's own server options, the caller's, then jit=off (edges.conninfo)."""
    try:
        own = conninfo_to_dict(dsn).get("options") or ""
    except psycopg.ProgrammingError:
        own = ""  # connect() reports the bad DSN
    return conninfo.server_options(str(own), extra)


# PgBouncer answers a startup parameter it does not pass on with this (SQLSTATE 08P01).
_UNSUPPORTED_STARTUP = re.compile(r"unsupported startup parameter: (\w+)")
# Prepared statements that vanished or collided between transactions: transaction pooling.
PREPARED_STATEMENT_SQLSTATES = ("26000", "42P05")


def unavailable(dsn: str, exc: BaseException) -> M10Error:
    """What a failed connection means: a refused setup (78), a refused login or an
    unreachable server (69)."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    startup = _UNSUPPORTED_STARTUP.search(reason)
    if startup:
        return ConfigError(
            f"PostgreSQL at {describe(dsn)} (a PgBouncer?) refused the startup parameter "
            f"{startup.group(1)!r}; set database_pooling (M10_DATABASE_POOLING) to "
            '"session" or "transaction", as PgBouncer\'s pool_mode'
        )
    if getattr(exc, "sqlstate", None) in ("28P01", "28000") or _REFUSED_LOGIN.search(reason):
        return DependencyUnavailable(
            f"PostgreSQL at {describe(dsn)}: authentication failed ({redact(reason)}); "
            "check the user and password in M10_DATABASE_URL and the server's pg_hba.conf"
        )
    return DependencyUnavailable(
        f"PostgreSQL at {describe(dsn)} is unreachable: {redact(reason)}; "
        "check that the server is up and M10_DATABASE_URL is right"
    )


def is_connection_error(exc: BaseException) -> bool:
    """Lost or refused connection, as opposed to an error in a statement or a protocol
    violation (08P01: a proxy refusing something; not "unreachable")."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    if _UNSUPPORTED_STARTUP.search(str(exc)):
        return True  # refused at startup: unavailable() says what to set
    state = getattr(exc, "sqlstate", None)
    if state == "08P01":
        return False
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def protocol_problem(exc: BaseException) -> ConfigError | None:
    """A statement failure that means the pooling setting is wrong, as a ConfigError."""
    state = getattr(exc, "sqlstate", None)
    if state in PREPARED_STATEMENT_SQLSTATES and "_pg3_" in str(exc):
        return ConfigError(
            "a prepared statement of this connection vanished or collided between "
            "transactions: PostgreSQL is behind a transaction-pooling PgBouncer; set "
            'database_pooling = "transaction" (M10_DATABASE_POOLING)'
        )
    if state == "08P01":
        return ConfigError(
            f"PostgreSQL (or a proxy in front of it) refused the protocol: "
            f"{redact(' '.join(str(exc).split()))}; if a PgBouncer is in front, set "
            "database_pooling (M10_DATABASE_POOLING) to its pool_mode"
        )
    return None


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
            raise LeaseLost(
                "PostgreSQL ended a transaction of this pass that sat idle "
                "past its lease (was this process paused?); nothing was "
                "committed"
            ) from None
        if is_connection_error(exc):
            raise unavailable(dsn, exc) from None
        problem = protocol_problem(exc)
        if problem is not None:
            raise problem from None
        raise


def now(conn: psycopg.Connection[Any]) -> datetime:
    """The database clock, in UTC: what decides "today", "yesterday", which hour or day
    is finished and how old something is.  A host's clock may be skewed (an hour, a day);
    the database's is the one every host shares."""
    value: datetime = one(conn.execute(query("db_now")))["now"]
    return value.astimezone(UTC)
