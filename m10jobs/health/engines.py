"""Health checks of no flow: the engines every flow stands on.  Add one as a function
here (`@checks("engines")`); `m10 status` runs it after the flows' checks.  (The
database's reachability is the status session itself: its red line is `database`.)"""

from __future__ import annotations

from typing import Any

from m10jobs.health import STATEMENT_TIMEOUT_MS, Checks, Status

checks = Checks()


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
    if info.role != "master":
        st.red(
            "redis",
            f"Redis at {st.redis['server']} is a replica: the outbox cannot write to it",
            "point M10_REDIS_URL at the primary, or use redis+sentinel://",
        )
