"""Redis (Streams) access: the client the jobs use, and connection failures as 69.

redis-py is imported by the Redis edges (this one, outbox_stream) and inside
two passes: dead-letter routing (redis.ResponseError) and the canary's redis
probe (its own client, with the probe's timeout) -- never at module level of a
job, so `--help` does not pay for it.

Connection problems surface as DependencyUnavailable (exit 69) naming the
server without its password.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import urlsplit

import redis

from m10jobs.errors import ConfigError, DependencyUnavailable
from m10jobs.redact import redact

SOCKET_TIMEOUT_S = 10


def describe(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError:
        port = "?"
    return f"{parts.hostname or 'localhost'}:{port}{parts.path or ''}"


def check_url(url: str) -> None:
    """ConfigError (78) for a Redis URL that cannot be parsed (a bad port, db number)."""
    try:
        redis.connection.parse_url(url)
    except ValueError as exc:
        raise ConfigError(
            f"redis_url (M10_REDIS_URL) is not a valid Redis URL: "
            f"{redact(str(exc))}; fix it (e.g. redis://host:6379/0)"
        ) from None


def client(url: str) -> redis.Redis:
    """A client that fails fast instead of hanging a timer-driven pass."""
    check_url(url)
    return redis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=5, health_check_interval=30
    )


@contextlib.contextmanager
def translated(url: str) -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise DependencyUnavailable(
            f"Redis at {describe(url)} is unreachable: {redact(str(exc))}; check that it is up "
            "and M10_REDIS_URL is right"
        ) from None
