"""The schema version and each host's release (m10 status's SCHEMA section): which hosts a
migration leaves behind.  Run by status with the lease rows, before the declared checks."""

from __future__ import annotations

from typing import Any

from m10jobs.health import Status

HOST_SEEN_WITHIN_S = 86400
"""A host that recorded its release within this long counts as running (m10 status)."""


def check_schema(st: Status, conn: Any, leases: list[dict[str, Any]] | None) -> None:
    """The schema version, each host's release, and the hosts it leaves behind (red): a
    host seen in the last day whose release would refuse the schema."""
    from m10jobs import release
    from m10jobs.edges.queries import query

    rows = conn.execute(query("status_schema_migrations")).fetchall()
    hosts = conn.execute(query("status_hosts")).fetchall()
    version = release.number(rows[-1]["version"]) if rows else None
    st.schema = {
        "version": version,
        "release": release.VERSION,
        "runs_on": release.schema_range(),
        "hosts": [
            {k: h[k] for k in ("host", "release", "requires", "knows", "age_s")} for h in hosts
        ],
    }
    for h in hosts:
        if h["age_s"] > HOST_SEEN_WITHIN_S:
            continue
        newer = [
            release.Newer(r["version"], r["compatible_with"], r["release"])
            for r in rows
            if release.number(r["version"]) > h["knows"]
        ]
        why = release.refusal(
            version, newer, version=h["release"], requires=h["requires"], known=h["knows"]
        )
        if why:
            st.red(
                "host-release",
                f"host {h['host']} runs m10jobs {h['release']}, older than the schema "
                f"at {version} wants ({why})",
                f"install m10jobs {release.VERSION} on {h['host']} (make install), "
                "see CHANGELOG.md",
            )
    # releases before 0.2.0 record nothing: a lease holder without a row is one of them
    # (listed, not red: a planted or stale lease row would make it a false alarm)
    recorded = {h["host"] for h in hosts}
    st.schema["unrecorded"] = sorted(
        {r["holder_id"].split(":", 1)[0] for r in leases or []} - recorded
    )
