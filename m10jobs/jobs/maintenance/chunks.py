"""Retention's chunk format: one archived batch of table rows.

A chunk (`<policy>-<first id>-<last id>.pgcopy.zst`) is PostgreSQL's binary COPY stream,
zstd-compressed, restorable as it is with `COPY ... FROM STDIN (FORMAT binary)`.  Its
header extension (which COPY skips) names the table's columns and types, so
`m10 retention show` can load any chunk into a temporary table of that shape and print
it as CSV.  Chunks from before it (*.csv.gz, *.jsonl.gz) are still read.  Written by
the retention_cleanup task (m10jobs/jobs/maintenance/retention.py), read by
`m10 retention show` (m10jobs/cli/ops/retention.py).
"""

from __future__ import annotations

import gzip
import json
import struct
from typing import TYPE_CHECKING, Any

from m10jobs.edges.queries import query
from m10jobs.errors import BadInput, TaskFailed

if TYPE_CHECKING:
    import psycopg

# `m10 retention show` prints a chunk's timestamps as ISO 8601 in UTC, whatever the server's
# defaults (the chunks themselves are binary: no session setting changes them)
ARCHIVE_SESSION = "-c DateStyle=ISO -c TimeZone=UTC"
# a table chunk: PostgreSQL's binary COPY stream, zstd-compressed
CHUNK_SUFFIX = ".pgcopy.zst"
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
# the header extension's contents start so (the format lets a writer put data there; COPY
# FROM skips it): then JSON {"table": ..., "columns": [[name, type], ...]}
CHUNK_META_TAG = b"m10jobs-retention-chunk:"


def chunk_meta(conn: psycopg.Connection[Any], table: str) -> bytes:
    """The header extension of `table`'s chunks (schema-qualified): its columns and their
    types, in order."""
    cols = [
        [r["name"], r["type"]] for r in conn.execute(query("retention_columns"), {"table": table})
    ]
    return CHUNK_META_TAG + json.dumps({"table": table, "columns": cols}).encode()


def compress_chunk(data: bytes | bytearray, meta: bytes) -> bytes:
    """A binary COPY stream with meta as its header extension, zstd level 1.  (Level 1:
    ~0.15 s of CPU a million rows against gzip level 1's ~0.4 s, and smaller.)"""
    import zstandard  # only for a pass that archives rows

    if data[:11] != COPY_SIGNATURE or data[15:19] != bytes(4):
        raise TaskFailed("COPY (FORMAT binary) did not start with the header expected")
    head = bytes(data[:15]) + struct.pack("!i", len(meta)) + meta
    z = zstandard.ZstdCompressor(level=1).compressobj(size=len(head) + len(data) - 19)
    return z.compress(head) + z.compress(memoryview(data)[19:]) + z.flush()


MAX_CHUNK_BYTES = 4 << 30  # decompressed; batches hold at most 100,000 rows


def open_chunk(name: str, data: bytes) -> bytes:
    """A chunk's contents, decompressed: a binary COPY stream (*.pgcopy.zst), or the CSV
    or JSON lines of a chunk from before it (*.gz).  BadInput (65) for anything else."""
    import zstandard

    fix = (
        "it is not a whole retention chunk (truncated or not one): restore it from the "
        "archive's copy"
    )
    try:
        if name.endswith(".gz"):
            return gzip.decompress(data)
        if not name.endswith(CHUNK_SUFFIX):
            raise BadInput(f"{name}: not a retention chunk (*{CHUNK_SUFFIX}, *.csv.gz, *.jsonl.gz)")
        size = zstandard.frame_content_size(data)
        if not 0 < size <= MAX_CHUNK_BYTES:
            raise BadInput(f"{name}: its zstd header gives no plausible size; {fix}")
        stream = zstandard.ZstdDecompressor().decompress(data)
    except (OSError, EOFError, zstandard.ZstdError) as exc:
        raise BadInput(f"{name}: {exc}; {fix}") from None
    if stream[:11] != COPY_SIGNATURE or len(stream) < 21 or stream[-2:] != b"\xff\xff":
        raise BadInput(f"{name}: not a whole PostgreSQL binary COPY stream; {fix}")
    return stream


def chunk_columns(name: str, stream: bytes) -> list[tuple[str, str]]:
    """The [name, type] columns a chunk's header extension records (open_chunk's stream).
    BadInput when it records none or they do not parse."""
    (ext,) = struct.unpack("!i", stream[15:19])
    body = stream[19 : 19 + ext]
    try:
        if not body.startswith(CHUNK_META_TAG):
            raise ValueError("no column list")
        cols = json.loads(body[len(CHUNK_META_TAG) :])["columns"]
        if not cols or not all(
            isinstance(c, list) and len(c) == 2 and all(isinstance(v, str) and v for v in c)
            for c in cols
        ):
            raise ValueError("a malformed column list")
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInput(
            f"{name}: its header names no columns ({exc}); restore it with "
            "`m10 retention show --binary` into the table it came from"
        ) from None
    return [(c[0], c[1]) for c in cols]


def load_chunk(conn: psycopg.Connection[Any], name: str, stream: bytes) -> None:
    """Load a chunk's stream (open_chunk) into TEMPORARY TABLE chunk, dropped at the end
    of the transaction, shaped by the columns its header records.  The database resolves
    the types first (to_regtype), so the CREATE holds only types it knows by those names,
    never text from the file."""
    from psycopg import errors as e
    from psycopg import sql

    cols = chunk_columns(name, stream)
    try:
        types = [
            r["type"]
            for r in conn.execute(query("retention_chunk_types"), {"types": [t for _, t in cols]})
        ]
    except (e.DataError, e.ProgrammingError) as exc:
        raise BadInput(
            f"{name}: its header names a type PostgreSQL cannot parse ({exc.diag.message_primary})"
        ) from None
    unknown = [t for (_, t), known in zip(cols, types, strict=True) if known is None]
    if unknown:
        raise BadInput(
            f"{name}: its header names types this database does not have: {', '.join(unknown)}"
        )
    conn.execute(
        sql.SQL("CREATE TEMPORARY TABLE chunk ({}) ON COMMIT DROP").format(
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t))
                for (n, _), t in zip(cols, types, strict=True)
            )
        )
    )
    with conn.cursor() as cur, cur.copy("COPY chunk FROM STDIN (FORMAT binary)") as cp:
        cp.write(stream)
