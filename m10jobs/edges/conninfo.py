"""DSN rules shared by the driver's connections (edges.db) and the libpq lease probe
(edges.leaseprobe): plain Python on a parsed conninfo, so the probe applies them
without importing the driver."""

from __future__ import annotations

from collections.abc import Mapping

CONNECT_TIMEOUT_S = 5
POOLING_MODES = ("none", "session", "transaction")
POOLING = "none"
"""The database_pooling setting (load_config sets it for the process): "session" or
"transaction" when a PgBouncer in that pool_mode sits in front of PostgreSQL."""
SSLMODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})


def problem(info: Mapping[str, object]) -> str | None:
    """What is wrong with a parsed DSN that libpq would only reject at connect time
    (reported as 'unreachable'): a bad port or sslmode, or an unencoded '@' in the
    password (libpq then takes the password's tail for the host name)."""
    if "@" in str(info.get("host") or ""):
        return "has an unencoded '@' in its user or password (write it as %40)"
    for port in str(info.get("port") or "").split(","):
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            return f"has an invalid port {port[:10]!r} (expected 1-65535)"
    sslmode = info.get("sslmode")
    if sslmode is not None and sslmode not in SSLMODES:
        return (
            f"has an invalid sslmode {str(sslmode)[:20]!r} (expected one of "
            f"{', '.join(sorted(SSLMODES))})"
        )
    return None


def server_options(own: str, extra: str = "") -> str:
    """The DSN's own server options, the caller's, then jit=off: our statements are
    short, and JIT compiling one whose cost estimate looks big (the outbox claim's, on
    a large table) took 0.2-1 s, many times the query itself."""
    return " ".join(part for part in (own, extra, "-c jit=off") if part)


def pooled() -> bool:
    """A PgBouncer in front: it refuses the `options` startup parameter, and a server
    session does not end with its client."""
    return POOLING != "none"


def transaction_pooled() -> bool:
    """Transaction pooling: no session state survives a transaction (no SET, LISTEN,
    prepared statements)."""
    return POOLING == "transaction"
