"""`m10 flows --check`: audit a live installation against the seed's isolation and
atomicity properties.  Each check returns the breaches it found (empty = holds);
its SQL is the named queries of sql/queries/audit.sql."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m10jobs.config import Config
from m10jobs.edges.metrics import SAMPLE_LINE
from m10jobs.edges.queries import query

# The seed's lock inventory, spelled out on purpose: the audit checks the registry
# against it, so it must not be derived from the registry.
SEED_LOCKS = (
    "m10:outbox_processor",
    "dl_reconcile",
    "matview_*",
    "retention_cleanup",
    "reclaim_gc",
)


@dataclass(frozen=True)
class Audit:
    conn: Any  # psycopg connection with dict rows
    config: Config


@dataclass(frozen=True)
class Check:
    title: str
    why: str
    run: Callable[[Audit], list[str]]


def _rows(a: Audit, name: str) -> list[dict[str, Any]]:
    """The rows of one named query of sql/queries/audit.sql."""
    return a.conn.execute(query(name)).fetchall()


def app_reads_nothing(a: Audit) -> list[str]:
    return [f"m10_app can {r['priv']} {r['obj']}" for r in _rows(a, "audit_app_privileges")]


def lock_access_function_only(a: Audit) -> list[str]:
    return [
        f"{r['grantee']} holds {r['privilege_type']} on distributed_locks directly"
        for r in _rows(a, "audit_lock_table_grants")
    ]


def public_has_nothing(a: Audit) -> list[str]:
    return [f"PUBLIC has {r['priv']} on {r['obj']}" for r in _rows(a, "audit_public_privileges")]


def registered_locks_only(a: Audit) -> list[str]:
    from m10jobs.registry import jobs, scope_of

    patterns = [t.lock for j in jobs() for t in j.tasks]
    breaches = [
        f"seed lock {name} is not registered by any job"
        for name in SEED_LOCKS
        if name not in {p.replace("{key}", "*") for p in patterns}
    ]
    breaches += [
        f"lock {r['lock_name']} (held by {r['holder_id']}) is not a registered lock"
        for r in _rows(a, "audit_lock_rows")
        if scope_of(r["lock_name"]) is None
    ]
    return breaches


def marker_dirs_safe(a: Audit) -> list[str]:
    breaches = []
    me = os.geteuid()
    for directory in (a.config.state_dir, a.config.log_dir, a.config.metrics_dir):
        if directory is None:
            continue
        for path in [Path(directory), *Path(directory).glob("*")]:
            if not path.is_dir() or path.is_symlink():
                continue
            st = path.stat()
            if st.st_mode & stat.S_IWOTH:
                breaches.append(f"{path} is world-writable (mode {stat.filemode(st.st_mode)})")
            if st.st_uid not in (0, me):
                breaches.append(f"{path} is owned by uid {st.st_uid}, not root or this user")
    return breaches


def metrics_parse(a: Audit) -> list[str]:
    if a.config.metrics_dir is None:
        return []
    breaches = []
    for prom in sorted(Path(a.config.metrics_dir).glob("m10_*.prom")):
        for n, line in enumerate(prom.read_text().splitlines(), 1):
            if line and not line.startswith("#") and not SAMPLE_LINE.match(line):
                breaches.append(f"{prom}:{n} is not a valid sample: {line[:80]!r}")
    return breaches


CHECKS = (
    Check(
        "L6/L5 never read L7 state",
        "role m10_app reads no m10_recovery table and calls no function but enqueue_outbox",
        app_reads_nothing,
    ),
    Check(
        "Function-based lock access",
        "no role but the owner holds privileges on "
        "distributed_locks; leases change only through the lock functions",
        lock_access_function_only,
    ),
    Check(
        "PUBLIC has nothing",
        "no PUBLIC privilege on the schema, its tables, sequences or functions",
        public_has_nothing,
    ),
    Check(
        "Lock names are registered",
        "every seed lock is declared by a job and every lease row names a registered lock",
        registered_locks_only,
    ),
    Check(
        "Marker directories are safe",
        "state, log and metrics directories are not "
        "world-writable and are owned by root or the jobs' user (flock + rename needs it)",
        marker_dirs_safe,
    ),
    Check(
        "Metrics parse",
        "every m10_*.prom file is valid textfile-collector syntax (L8 receives metrics only)",
        metrics_parse,
    ),
)


def run_checks(a: Audit) -> list[tuple[Check, list[str]]]:
    return [(c, c.run(a)) for c in CHECKS]
