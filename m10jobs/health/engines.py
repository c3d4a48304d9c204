"""Health checks of no flow: the engines every flow stands on, and the config file.  Add
one as a function here (`@checks("engines")`); `m10 status` runs it after the flows'
checks.  (The database's reachability is the status session itself: its red line is
`database`; the config file's, check_config, runs first of all.)"""

from __future__ import annotations

from typing import Any

from m10jobs.health import STATEMENT_TIMEOUT_MS, Checks, Status

checks = Checks()


def check_config(st: Status, config: Any) -> bool:
    """The config file validated as every job validates it at start: red (and False) when
    it has problems, since every job then exits 78 before doing anything."""
    from m10jobs.registry import sections

    found = config.problems(sections)
    st.config = {"source": str(config.source), "problems": found}
    if found:
        more = f" (and {len(found) - 1} more)" if found[1:] else ""
        st.red(
            "config-invalid",
            f"{found[0]}{more}: every job exits 78 until it is fixed",
            "m10 config check   (lists every problem with the fix), then edit the file",
        )
    return not found


@checks("engines", database=True)
def check_postgres(st: Status, config: Any, conn: Any) -> None:
    """The PostgreSQL behind M10_DATABASE_URL: role, timeline (a promotion moves it on),
    which host of a multi-host DSN answered; red when it is a standby."""
    from m10jobs.edges.queries import one, query

    st.postgres = dict(one(conn.execute(query("status_postgres"))))
    if st.postgres["role"] != "primary":
        st.red(
            "database-role",
            "M10_DATABASE_URL leads to a standby (read-only): every job that writes fails",
            "point it at the primary, or list every host with target_session_attrs=read-write",
        )


@checks("engines")
def check_redis(st: Status, config: Any, conn: Any) -> None:
    """The Redis the outbox writes to: role, persistence, replicas (and a red line when
    it is unreachable or not the primary)."""
    from m10jobs.edges import streams
    from m10jobs.errors import M10Error

    url = config.redis_url
    st.redis = {"server": streams.describe(url)}
    try:
        client = streams.client(url, timeout=STATEMENT_TIMEOUT_MS / 1000)
        with streams.translated(url):
            info = streams.server_info(client)
            where = streams.address(client)
    except M10Error as exc:
        st.red("redis", str(exc), "check Redis (and its Sentinels) and M10_REDIS_URL")
        return
    st.redis |= {
        "role": info.role,
        "address": where,
        "version": info.version,
        "persistence": info.persistence(),
        "durable": info.durable,
        "replicas": info.replicas,
    }
    if not info.durable:
        _persistence(st, config, info)
    if info.role != "master":
        st.red(
            "redis",
            f"Redis at {st.redis['server']} is a replica: the outbox cannot write to it",
            "point M10_REDIS_URL at the primary, or use redis+sentinel://",
        )


def _persistence(st: Status, config: Any, info: Any) -> None:
    """Redis without AOF fsynced at least every second: red when the outbox is told to
    refuse it ([outbox] require_aof: every pass exits 78), else a note (the outbox warns
    and re-appends what a restart lost: docs/outbox.md)."""
    from m10jobs.errors import ConfigError
    from m10jobs.jobs.outbox.settings import OutboxSettings

    try:
        required = config.settings(OutboxSettings).require_aof
    except ConfigError:  # an invalid [outbox] table is config-invalid's red line
        required = False
    fix = (
        "appendonly yes and appendfsync everysec in redis.conf (or CONFIG SET ...; CONFIG REWRITE)"
    )
    if required:
        st.red(
            "redis-persistence",
            f"Redis at {st.redis['server']} runs with {info.persistence()} and "
            "[outbox] require_aof is set: every outbox pass exits 78, nothing is published",
            f"set {fix}, or [outbox] require_aof = false to publish anyway",
        )
    else:
        st.redis["note"] = (
            f"{info.persistence()}: a Redis restart loses what it acknowledged last; "
            "the outbox re-appends it (set [outbox] require_aof to refuse)"
        )
