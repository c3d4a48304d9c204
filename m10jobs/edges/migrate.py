"""`m10 db migrate`: apply sql/migrations/NNN_*.sql in order, exactly once each.

Safe to run twice and from two hosts at once: a session advisory lock
serialises migrators (the lease table may not exist yet), each file runs in its
own transaction together with its bookkeeping row, and a file whose checksum
differs from what was applied is refused before anything runs (exit 78).
sql/grants.sql is re-applied at the end so every object follows the access policy.

Producers (every layer calling enqueue_outbox) must never queue behind a
migration that waits for a table lock: every attempt runs with a short
`lock_timeout`, and an attempt that times out is rolled back and retried after
a pause, so producers wait at most one `lock_timeout` at a time.

A file whose first line is `-- m10: no-transaction` runs statement by
statement outside a transaction (what `CREATE INDEX CONCURRENTLY` needs on a
big table).  Its statements are plain ones ending with `;` at the end of a
line (no function bodies) and must be re-runnable (`IF [NOT] EXISTS`): a crash
between two of them runs the file again.  An index left INVALID by an
interrupted concurrent build is dropped before each statement, so
`CREATE INDEX CONCURRENTLY IF NOT EXISTS` never mistakes it for a finished one.

Header lines `-- m10: WORD ...` among a file's leading comments mark it for the release
contract (docs/developing.md "Releases and schema versions"): `expand` (only adds: every
older release keeps working), `compatible-with X.Y` (releases X.Y and later keep working),
`contract <why>` (removes or renames: older releases refuse the schema), `not-required`
(this release's code works before it is applied).  After applying, the marks and the
release that applied each file are kept in schema_migrations (columns of migration 160),
where a release that never saw the file reads them (m10jobs.release).

Comments of an applied file may be corrected once the migration is in the field
only by recording it in COMMENT_EDITS (see there): the database keeps the
checksum of the bytes it ran, and an edit the table does not vouch for is still
refused.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.errors import LockNotAvailable

from m10jobs import release
from m10jobs.edges.queries import SQL_DIR, one, query
from m10jobs.errors import ConfigError, TaskFailed
from m10jobs.release import EVERY_RELEASE

MIGRATIONS_DIR = SQL_DIR / "migrations"
GRANTS = SQL_DIR / "grants.sql"
SCHEMA_FILE = SQL_DIR / "schema.sql"
SCHEMAS = ("m10_recovery", "aos_cost")
# pg_advisory_lock key: 'm10m' as an int; only migrators use it.
MIGRATE_LOCK_KEY = 0x6D31306D
NO_TRANSACTION = "-- m10: no-transaction"
MARK = "-- m10:"
LOCK_TIMEOUT_MS = 1000
LOCK_RETRY_FOR_S = 600.0

BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS m10_recovery;
CREATE TABLE IF NOT EXISTS m10_recovery.schema_migrations (
    version    text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON m10_recovery.schema_migrations FROM PUBLIC;
"""

_INVALID_INDEXES = """
SELECT format('%%I.%%I', n.nspname, c.relname) AS name
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT i.indisvalid AND n.nspname = ANY(%s)
"""
_STATEMENT_END = re.compile(r";[ \t]*(?:--[^\n]*)?$", re.MULTILINE)


@dataclass(frozen=True)
class CommentEdit:
    """An applied migration whose comment lines were edited later, nothing else.

    `applied` is the sha256 of the file as it was applied (what databases
    migrated before the edit hold in schema_migrations); `code` is the sha256 of
    its text without comment lines (code_checksum()), the same before and after a
    comment-only edit.  A database holding `applied` accepts the current file only
    while the current file's code checksum is still `code`: any change to a
    statement is refused as before.
    """

    applied: str
    code: str


# version -> the earlier contents of that file which databases may have applied.
# Add an entry (the old `sha256sum`, and code_checksum() of the file) in the same
# commit that edits an applied file's comments; never for any other change.
COMMENT_EDITS: dict[str, tuple[CommentEdit, ...]] = {
    # the header cited a design brief that is not in the repository (now docs/contract.md)
    "002_lease_functions": (
        CommentEdit(
            applied="dbb40db9f56f4d2b850b1322fdcac45a902006abd93cd14d73a8ff2a8a604dc2",
            code="69c732681ca56b35cfd2ca24a8e6308f0886951b22cddf1b65f303866689b1aa",
        ),
    ),
}


# version -> (mark, why): the release-contract mark of a file written before marks existed,
# whose header can no longer change (its checksum is applied).  Reviewed like a header.
LATER_MARKS: dict[str, tuple[str, str]] = {
    "090_dead_letter_refusal_discard": (
        "expand",
        "adds nullable columns and replaces reconcile_outcome's CHECK by a wider one "
        "(one more value, 'discarded', which older releases never write)",
    ),
}


def code_checksum(text: str) -> str:
    """sha256 of a migration without its comment lines (a line whose first non-blank
    characters are `--`), blank lines and trailing blanks: unchanged by an edit
    of comments alone.  Comments after code on the same line count as code."""
    code = "\n".join(
        line.rstrip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("--")
    )
    return hashlib.sha256(code.encode()).hexdigest()


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def code_checksum(self) -> str:
        return code_checksum(self.sql)

    @property
    def marks(self) -> dict[str, str]:
        """Its `-- m10: WORD rest` header lines among the leading comments: {WORD: rest}."""
        found = {}
        for line in self.sql.splitlines():
            stripped = line.strip()
            if stripped and not stripped.startswith("--"):
                break
            if stripped.startswith(MARK):
                word, _, rest = stripped[len(MARK) :].strip().partition(" ")
                found[word] = rest.strip()
        return found

    @property
    def compatible_with(self) -> str | None:
        """The oldest release that keeps working once it is applied (None: only releases
        that ship it)."""
        marks = self.marks
        later = LATER_MARKS.get(self.version)
        if later is not None:
            marks = {**marks, later[0]: ""}
        if "expand" in marks:
            return EVERY_RELEASE
        return marks.get("compatible-with") or None

    @property
    def transactional(self) -> bool:
        return not self.sql.startswith(NO_TRANSACTION)

    def statements(self) -> list[str]:
        """A no-transaction file's statements, in order (comment-only chunks dropped)."""
        parts, start = [], 0
        text = self.sql
        for m in _STATEMENT_END.finditer(text):
            parts.append(text[start : m.start()])
            start = m.end()
        parts.append(text[start:])
        out = []
        for p in parts:
            code = "\n".join(
                line
                for line in p.splitlines()
                if line.strip() and not line.strip().startswith("--")
            )
            if code.strip():
                out.append(code.strip())
        return out


@dataclass(frozen=True)
class LockPolicy:
    """How long one attempt may wait for a lock, and for how long to keep retrying."""

    timeout_ms: int = LOCK_TIMEOUT_MS
    retry_for_s: float = LOCK_RETRY_FOR_S
    pause_s: float = 0.5


def available(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    return [Migration(p.stem, p) for p in sorted(directory.glob("[0-9][0-9][0-9]_*.sql"))]


def migrate(
    conn: psycopg.Connection[dict[str, Any]],
    directory: Path = MIGRATIONS_DIR,
    *,
    dry_run: bool = False,
    locks: LockPolicy | None = None,
    comment_edits: dict[str, tuple[CommentEdit, ...]] | None = None,
) -> list[str]:
    """Apply what is pending; the versions applied (or, dry run, that would be)."""
    locks = locks or LockPolicy()
    conn.autocommit = True
    # Polled, not waited for inside a statement: a concurrent index build waits for
    # every open transaction, so a migrator blocked in pg_advisory_lock() would
    # deadlock with the one building the index.
    while not one(conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (MIGRATE_LOCK_KEY,)))["ok"]:
        time.sleep(0.2)
    try:
        if not dry_run:
            conn.execute(BOOTSTRAP)
        applied = _applied(conn)
        known = available(directory)
        pending = _check(
            known,
            applied,
            COMMENT_EDITS if comment_edits is None else comment_edits,
        )
        if dry_run:
            return [m.version for m in pending]
        for m in pending:
            if m.transactional:
                _retrying(conn, locks, m.path.name, lambda m=m: _apply_in_transaction(conn, m))
            else:
                _apply_statements(conn, m, locks)
        _retrying(conn, locks, GRANTS.name, lambda: _grants(conn))
        _retrying(conn, locks, "schema_migrations", lambda: _stamp(conn, known, pending))
        return [m.version for m in pending]
    finally:
        conn.execute("SET lock_timeout = DEFAULT")
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK_KEY,))


def _apply_in_transaction(conn: psycopg.Connection[dict[str, Any]], m: Migration) -> None:
    with conn.transaction():
        conn.execute(m.sql)
        _record(conn, m)


def _apply_statements(
    conn: psycopg.Connection[dict[str, Any]], m: Migration, locks: LockPolicy
) -> None:
    for i, statement in enumerate(m.statements(), 1):

        def attempt(statement: str = statement) -> None:
            for row in conn.execute(_INVALID_INDEXES, (list(SCHEMAS),)).fetchall():
                conn.execute(
                    sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.SQL(row["name"]))
                )
            conn.execute(statement)

        _retrying(conn, locks, f"{m.path.name} (statement {i})", attempt)
    _record(conn, m)


def _grants(conn: psycopg.Connection[dict[str, Any]]) -> None:
    with conn.transaction():
        conn.execute(GRANTS.read_text())


def _stamp(
    conn: psycopg.Connection[dict[str, Any]], known: list[Migration], applied: list[Migration]
) -> None:
    """Keep each known file's compatibility mark, and who applied this run's files, in
    schema_migrations (once migration 160 gave it the columns)."""
    if not one(conn.execute(query("migration_marks_exist")))["e"]:
        return
    conn.execute(
        query("stamp_migration_marks"),
        {
            "versions": [m.version for m in known],
            "compatible": [m.compatible_with for m in known],
            "applied": [m.version for m in applied],
            "release": release.VERSION,
        },
    )


def _record(conn: psycopg.Connection[dict[str, Any]], m: Migration) -> None:
    conn.execute(
        "INSERT INTO m10_recovery.schema_migrations (version, checksum) VALUES (%s, %s)",
        (m.version, m.checksum),
    )


def _retrying(
    conn: psycopg.Connection[dict[str, Any]], locks: LockPolicy, what: str, attempt: Any
) -> None:
    """Run attempt() with a short lock_timeout, again after a pause while it times out."""
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{locks.timeout_ms}ms")))
    give_up = time.monotonic() + locks.retry_for_s
    while True:
        try:
            attempt()
            return
        except LockNotAvailable:
            if time.monotonic() >= give_up:
                raise TaskFailed(
                    f"migration {what} could not take its lock within {locks.retry_for_s:.0f} s "
                    f"(each try waits {locks.timeout_ms} ms so producers are not blocked): a "
                    "long transaction holds it (see pg_stat_activity); rerun `m10 db migrate` "
                    "once it has ended"
                ) from None
            time.sleep(locks.pause_s)


def _applied(conn: psycopg.Connection[dict[str, Any]]) -> dict[str, str]:
    exists = one(
        conn.execute("SELECT to_regclass('m10_recovery.schema_migrations') IS NOT NULL AS e")
    )
    if not exists["e"]:
        return {}
    rows = conn.execute("SELECT version, checksum FROM m10_recovery.schema_migrations").fetchall()
    return {r["version"]: r["checksum"] for r in rows}


def _check(
    migrations: list[Migration],
    applied: dict[str, str],
    comment_edits: dict[str, tuple[CommentEdit, ...]] | None = None,
) -> list[Migration]:
    known = {m.version for m in migrations}
    for m in migrations:
        if m.version in applied and not _same(m, applied[m.version], comment_edits or {}):
            raise ConfigError(
                f"migration {m.path.name} was edited after it was applied (checksum "
                f"{m.checksum[:12]} != applied {applied[m.version][:12]}); restore the file "
                "from version control and put the change in a new migration"
            )
    missing = sorted(set(applied) - known)
    if missing:
        raise ConfigError(
            f"the database has migrations this version does not know "
            f"({', '.join(missing)}); run a newer m10jobs"
        )
    return [m for m in migrations if m.version not in applied]


def _same(
    m: Migration, applied_checksum: str, comment_edits: dict[str, tuple[CommentEdit, ...]]
) -> bool:
    """The file is what the database applied, or differs from it in recorded comments only."""
    if applied_checksum == m.checksum:
        return True
    return any(
        e.applied == applied_checksum and e.code == m.code_checksum
        for e in comment_edits.get(m.version, ())
    )


# -- the current schema (sql/schema.sql) ---------------------------------------
SCHEMA_HEADER = """\
-- The current schema of m10jobs' own schemas (m10_recovery, aos_cost): what
-- `m10 db migrate` from zero produces, as pg_dump --schema-only prints it with
-- comments, SET lines and blank lines removed.  Generated, do not edit:
-- `make schema` rewrites it after a new migration; tests/integration/test_schema.py
-- fails while it differs.  `m10 db schema --check` compares a live database.
"""


def pg_dump_binary() -> str:
    """The newest pg_dump installed (it must be at least the server's version)."""
    import glob
    import shutil

    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_dump"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return found[-1]
    on_path = shutil.which("pg_dump")
    if on_path:
        return on_path
    raise ConfigError("pg_dump not found; install the PostgreSQL client (postgresql-client)")


def dump_schema(dsn: str) -> str:
    """The normalised schema-only dump of our schemas in the database at dsn."""
    import subprocess

    args = [
        pg_dump_binary(),
        "--schema-only",
        "--no-tablespaces",
        *(f"--schema={s}" for s in SCHEMAS),
        f"--dbname={dsn}",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        from m10jobs.redact import redact

        raise TaskFailed(f"pg_dump failed: {redact(proc.stderr.strip().splitlines()[-1])}")
    return normalise_dump(proc.stdout)


def normalise_dump(text: str) -> str:
    """Only what describes objects: no comments, session SETs, psql meta-commands or
    blank lines, so two dumps of equal schemas compare equal whatever dumped them."""
    keep = []
    for line in text.splitlines():
        stripped = line.strip()
        if (
            not stripped
            or stripped.startswith("--")
            or stripped.startswith("\\")
            or line.startswith("SET ")
            or line.startswith("SELECT pg_catalog.set_config")
        ):
            continue
        keep.append(line.rstrip())
    return SCHEMA_HEADER + "\n".join(keep) + "\n"
