"""Who holds a pass's leases, asked through libpq itself (ctypes) before the driver loads.

Most timer starts on a second host find every lease of the pass held by the first
one: they log who holds each, and exit 75.  Importing psycopg costs about ten times
a bare interpreter start, more than everything else such a start does; this module
asks the same question with the same client library (psycopg's own libpq, or the
system's) in one round trip, so the runner can report those skips without ever
importing the driver.  The test is acquire_lock's first one: a live row.  The runner
asks only when every lease of the run is cluster-wide: a host-local lease is this
host's own, so a run holding one would pay this connection for nothing.

Only an optimisation: when anything is unexpected (no libpq, a DSN the driver's
checks would refuse, a failed connection or query, a stop signal, any exception) it
answers None and the runner goes the driver's way, which reports the problem as it
always has.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import time
from collections.abc import Sequence
from functools import cache
from importlib.util import find_spec
from typing import Any

from m10jobs import stopping
from m10jobs.edges import conninfo
from m10jobs.edges.queries import positional

_c = ctypes.c_char_p
_p = ctypes.c_void_p
_i = ctypes.c_int
# libpq's enums (libpq-fe.h)
CONNECTION_BAD = 1
POLLING_FAILED, POLLING_READING, POLLING_WRITING, POLLING_OK = 0, 1, 2, 3
PGRES_TUPLES_OK = 2
WAIT_SLICE_S = 0.1  # how often a wait looks at stopping.STOP
QUERY_TIMEOUT_S = 5
# A plain SELECT waits only behind an ACCESS EXCLUSIVE lock (a migration): not for long.
# No notices: libpq's default receiver prints them on stderr, which carries JSON logs, and
# a receiver of our own would be a libffi callback (a Python frame called from C).
PROBE_OPTIONS = "-c lock_timeout=2000 -c client_min_messages=error"


class _Option(ctypes.Structure):
    _fields_ = [
        ("keyword", _c),
        ("envvar", _c),
        ("compiled", _c),
        ("val", _c),
        ("label", _c),
        ("dispchar", _c),
        ("dispsize", _i),
    ]


_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "PQconninfoParse": (ctypes.POINTER(_Option), [_c, ctypes.POINTER(_p)]),
    "PQconninfoFree": (None, [ctypes.POINTER(_Option)]),
    "PQfreemem": (None, [_p]),
    "PQconnectStartParams": (_p, [ctypes.POINTER(_c), ctypes.POINTER(_c), _i]),
    "PQconnectPoll": (_i, [_p]),
    "PQstatus": (_i, [_p]),
    "PQsocket": (_i, [_p]),
    "PQsendQueryParams": (_i, [_p, _c, _i, _p, ctypes.POINTER(_c), _p, _p, _i]),
    "PQconsumeInput": (_i, [_p]),
    "PQisBusy": (_i, [_p]),
    "PQgetResult": (_p, [_p]),
    "PQresultStatus": (_i, [_p]),
    "PQntuples": (_i, [_p]),
    "PQnfields": (_i, [_p]),
    "PQfname": (_c, [_p, _i]),
    "PQgetvalue": (_c, [_p, _i, _i]),
    "PQgetisnull": (_i, [_p, _i, _i]),
    "PQclear": (None, [_p]),
    "PQfinish": (None, [_p]),
}


def _candidates() -> list[str]:
    """psycopg's bundled libpq (psycopg-binary: the library the driver will use), then
    the system's."""
    found = []
    spec = find_spec("psycopg_binary")  # locates it without running its __init__
    if spec is not None and spec.submodule_search_locations:
        libs = os.path.join(
            os.path.dirname(spec.submodule_search_locations[0]), "psycopg_binary.libs"
        )
        with contextlib.suppress(OSError):
            found += sorted(
                os.path.join(libs, n) for n in os.listdir(libs) if n.startswith("libpq")
            )
    return [*found, "libpq.so.5"]


@cache
def _libpq() -> Any:
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            for name, (restype, argtypes) in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = restype, argtypes
        except (OSError, AttributeError):
            continue
        return lib
    return None


def _parse(lib: Any, dsn: str) -> dict[str, str] | None:
    """The DSN's explicit settings as psycopg's conninfo_to_dict gives them; None if
    libpq cannot parse it."""
    err = _p()
    opts = lib.PQconninfoParse(dsn.encode(), ctypes.byref(err))
    if not opts:
        if err.value:
            lib.PQfreemem(err)
        return None
    try:
        info = {}
        i = 0
        while opts[i].keyword is not None:
            if opts[i].val is not None:
                info[opts[i].keyword.decode()] = opts[i].val.decode()
            i += 1
        return info
    finally:
        lib.PQconninfoFree(opts)


def _wait(fd: int, write: bool, deadline: float) -> bool:
    """Until the socket is ready; False at the deadline, without a socket, or when asked
    to stop (the caller then takes the driver's path, which honours the stop)."""
    if fd < 0:
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT if write else select.POLLIN)
    while not stopping.STOP.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if poller.poll(int(min(left, WAIT_SLICE_S) * 1000) + 1):
            return True
    return False


def _connect(lib: Any, dsn: str, app: str, own_options: str) -> Any:
    """A connection set up as edges.db.connect sets one up (the caller's settings after
    the DSN's, in the startup packet), or None."""
    pairs = [
        ("dbname", dsn),
        ("application_name", app),
        ("options", conninfo.server_options(own_options, PROBE_OPTIONS)),
    ]
    keys = (_c * (len(pairs) + 1))(*[k.encode() for k, _ in pairs], None)
    values = (_c * (len(pairs) + 1))(*[v.encode() for _, v in pairs], None)
    conn = lib.PQconnectStartParams(keys, values, 1)
    if not conn:
        return None
    deadline = time.monotonic() + conninfo.CONNECT_TIMEOUT_S
    state = POLLING_WRITING
    while lib.PQstatus(conn) != CONNECTION_BAD and state not in (POLLING_FAILED, POLLING_OK):
        if not _wait(lib.PQsocket(conn), state == POLLING_WRITING, deadline):
            break
        state = lib.PQconnectPoll(conn)
    if state == POLLING_OK:
        return conn
    lib.PQfinish(conn)
    return None


def _array(items: Sequence[str]) -> str:
    """A text[] literal."""
    return (
        "{" + ",".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items) + "}"
    )


def _rows(lib: Any, conn: Any, sql: str, params: list[str]) -> list[dict[str, str | None]] | None:
    """The rows (text values) of one statement, or None."""
    values = (_c * len(params))(*[p.encode() for p in params])
    if not lib.PQsendQueryParams(conn, sql.encode(), len(params), None, values, None, None, 0):
        return None
    deadline = time.monotonic() + QUERY_TIMEOUT_S
    while True:
        if not lib.PQconsumeInput(conn):
            return None
        if not lib.PQisBusy(conn):
            break
        if not _wait(lib.PQsocket(conn), False, deadline):
            return None
    rows: list[dict[str, str | None]] | None = None
    while res := lib.PQgetResult(conn):
        try:
            if rows is None and lib.PQresultStatus(res) == PGRES_TUPLES_OK:
                cols = [lib.PQfname(res, j).decode() for j in range(lib.PQnfields(res))]
                rows = [
                    {
                        c: None
                        if lib.PQgetisnull(res, r, j)
                        else lib.PQgetvalue(res, r, j).decode()
                        for j, c in enumerate(cols)
                    }
                    for r in range(lib.PQntuples(res))
                ]
        finally:
            lib.PQclear(res)
    return rows


def live_holders(dsn: str, names: Sequence[str], *, app: str) -> dict[str, dict[str, Any]] | None:
    """{lease: holder} for those of `names` whose lease is live right now (the holder as
    edges.lease.live_holder gives it), or None when libpq could not be asked.

    Whatever goes wrong in here (a DSN with a byte that is not UTF-8, an answer this
    code did not foresee) is None too, never an exception: the driver's way reports it."""
    try:
        return _live_holders(dsn, names, app=app)
    except Exception:
        return None


def _live_holders(dsn: str, names: Sequence[str], *, app: str) -> dict[str, dict[str, Any]] | None:
    if conninfo.pooled():  # PgBouncer refuses the probe's startup options
        return None
    lib = _libpq()
    info = None if lib is None else _parse(lib, dsn)
    if info is None or conninfo.problem(info):
        return None
    conn = _connect(lib, dsn, app, info.get("options", ""))
    if conn is None:
        return None
    try:
        sql, order = positional("lease_holders")
        params = {"names": _array(names)}
        rows = _rows(lib, conn, sql, [params[n] for n in order])
    finally:
        lib.PQfinish(conn)
    if rows is None:
        return None
    held: dict[str, dict[str, Any]] = {}
    for row in rows:
        name, holder, token, age, expires = (
            row.get(k) for k in ("lock_name", "holder_id", "fencing_token", "age_s", "expires_in_s")
        )
        if name is None or holder is None or token is None or age is None or expires is None:
            return None
        if float(expires) > 0:
            held[name] = {
                "holder_id": holder,
                "fencing_token": int(token),
                "age_s": float(age),
                "expires_in_s": float(expires),
            }
    return held
