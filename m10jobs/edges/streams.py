"""Redis (Streams) access: the one place a Redis client is built, what the server
says about its durability, and connection failures as 69.

Every Redis user (outbox, dead letters, synthetic traffic, the canary's probe,
`m10 status`) gets its client from client(), so every one accepts the same URL
forms: redis://, rediss://, unix:// and a Sentinel form

    redis+sentinel://[[user]:password@]host1[:26379],host2[:26379]/SERVICE[/DB]
        [?sentinel_password=...&sentinel_username=...]

whose client asks the Sentinels for SERVICE's primary on every (re)connect, so
a failover is followed on the next pass without editing anything.  The URL's
password is the Redis servers'; sentinel_password the Sentinels' (both masked
in every output).  Redis Cluster is not supported (the outbox's publish script
touches many keys in one call).

redis-py is imported by the Redis edges (this one, outbox_stream) and inside
two passes: dead-letter routing (redis.ResponseError) and the canary's redis
probe -- never at module level of a job, so `--help` does not pay for it.

Connection problems surface as DependencyUnavailable (exit 69) naming the
server without its password.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.sentinel

from m10jobs.errors import ConfigError, DependencyUnavailable
from m10jobs.redact import redact

SOCKET_TIMEOUT_S = 10


SENTINEL_SCHEMES = ("redis+sentinel",)
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    """A parsed redis+sentinel:// URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None
    sentinel_username: str | None
    sentinel_password: str | None


def is_sentinel(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def parse_sentinel(url: str) -> SentinelURL:
    """ValueError (saying what is wrong, never the password) for a bad Sentinel URL."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item, "", "")
        host = host.strip("[]")
        if not host:
            raise ValueError(f"empty Sentinel host in {hosts!r}")
        if port and not port.isdigit():
            raise ValueError(f"bad Sentinel port {port!r}")
        sentinels.append((host, int(port) if port else SENTINEL_PORT))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("expected /SERVICE or /SERVICE/DB after the Sentinel hosts")
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"bad db number {path[1]!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"sentinel_password", "sentinel_username"}
    if unknown:
        raise ValueError(f"unknown parameter {sorted(unknown)[0]!r}")
    return SentinelURL(
        tuple(sentinels),
        unquote(path[0]),
        int(path[1]) if len(path) == 2 else 0,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
        query.get("sentinel_username"),
        query.get("sentinel_password"),
    )


def describe(url: str) -> str:
    """The server(s) a URL names, without credentials."""
    if is_sentinel(url):
        try:
            s = parse_sentinel(url)
        except ValueError:
            return "Sentinel (unparsable URL)"
        hosts = ",".join(f"{h}:{p}" for h, p in s.sentinels)
        return f"primary {s.service!r} of Sentinel {hosts} db {s.db}"
    parts = urlsplit(url)
    try:
        port: int | str = parts.port or 6379
    except ValueError:
        port = "?"
    return f"{parts.hostname or 'localhost'}:{port}{parts.path or ''}"


def check_url(url: str) -> None:
    """ConfigError (78) for a Redis URL that cannot be parsed (a bad port, db number)."""
    try:
        if is_sentinel(url):
            parse_sentinel(url)
        else:
            redis.connection.parse_url(url)
    except ValueError as exc:
        raise ConfigError(
            f"redis_url (M10_REDIS_URL) is not a valid Redis URL: "
            f"{redact(str(exc))}; fix it (e.g. redis://host:6379/0 or "
            "redis+sentinel://h1:26379,h2:26379/mymaster/0)"
        ) from None


def client(url: str, timeout: float = SOCKET_TIMEOUT_S) -> redis.Redis:
    """The client every Redis user gets: fails fast instead of hanging a timer-driven
    pass; for a Sentinel URL, bound to the service's current primary."""
    check_url(url)
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": min(timeout, 5),
    }
    if not is_sentinel(url):
        return redis.Redis.from_url(url, health_check_interval=30, **common)
    s = parse_sentinel(url)
    sentinel = redis.sentinel.Sentinel(
        list(s.sentinels),
        sentinel_kwargs={
            **common,
            "username": s.sentinel_username,
            "password": s.sentinel_password,
        },
        **common,
    )
    return sentinel.master_for(
        s.service,
        db=s.db,
        username=s.username,
        password=s.password,
        health_check_interval=30,
        **common,
    )


def address(r: redis.Redis) -> str:
    """host:port the client writes to (for a Sentinel URL: the primary it names now)."""
    pool = r.connection_pool
    if isinstance(pool, redis.sentinel.SentinelConnectionPool):
        host, port = pool.get_master_address()
    else:
        host, port = pool.connection_kwargs.get("host"), pool.connection_kwargs.get("port")
        if pool.connection_kwargs.get("path"):
            return str(pool.connection_kwargs["path"])
    return f"{host}:{port}"


@dataclass(frozen=True)
class ServerInfo:
    """What a Redis server says about keeping what it acknowledged."""

    role: str
    """master or slave (INFO replication)."""
    run_id: str
    """Changes at every restart; a promoted replica has its own."""
    version: str
    aof: bool
    appendfsync: str | None
    """everysec / always / no; None where CONFIG GET is not allowed (managed Redis)."""
    replicas: int
    """Connected replicas."""

    @property
    def durable(self) -> bool:
        """AOF on and fsynced at least every second."""
        return self.aof and self.appendfsync in ("everysec", "always")

    @property
    def has_waitaof(self) -> bool:
        """WAITAOF exists from Redis 7.2."""
        major, minor = (int(x) for x in [*self.version.split("."), "0"][:2])
        return (major, minor) >= (7, 2)

    def persistence(self) -> str:
        return f"AOF, appendfsync {self.appendfsync or 'unknown'}" if self.aof else "no AOF"


def server_info(r: redis.Redis) -> ServerInfo:
    """INFO server/persistence/replication (+ CONFIG GET appendfsync), one round trip each."""
    info = {**r.info("server"), **r.info("persistence"), **r.info("replication")}
    fsync: str | None
    try:
        got = r.config_get("appendfsync")
        fsync = _str(got.get("appendfsync")) or None
    except redis.ResponseError:  # CONFIG renamed or not allowed
        fsync = None
    return ServerInfo(
        role=str(info.get("role", "?")),
        run_id=str(info.get("run_id", "")),
        version=str(info.get("redis_version", "0.0")),
        aof=bool(int(info.get("aof_enabled", 0))),
        appendfsync=fsync,
        replicas=int(info.get("connected_slaves", 0)),
    )


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


@contextlib.contextmanager
def translated(url: str) -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError) as exc:
        raise DependencyUnavailable(
            f"Redis at {describe(url)} is unreachable: {redact(str(exc))}; check that it is up "
            "and M10_REDIS_URL is right"
        ) from None
