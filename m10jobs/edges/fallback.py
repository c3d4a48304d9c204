"""Uploads that never lose a file: `upload()` stores to R2/S3, and when the store
fails, `retry_local_fallback()` keeps a copy plus `<name>.meta.json` under
`$M10_STATE_DIR/fallback-uploads/` for `m10-retry-r2-fallbacks` to retry.

The meta file is written last and is the commit point: a copy without meta
(a crash in between) is ignored.  Each fallback gets its own name (time +
sha prefix + basename), so two pending versions of one key are retried oldest
first and the newest content ends up in the store.  Everything here is read
through the files edge's safe reader: a planted symlink is never followed (so
never uploaded), and a `.uploaded` marker counts only when it parses and its
sha256 matches the meta and the file (marker_problem).  boto3 is imported lazily.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mimetypes
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from m10jobs.config import Config
from m10jobs.edges import files
from m10jobs.edges.files import atomic_write, atomic_write_json, file_lock
from m10jobs.errors import BadInput, M10Error

META_SUFFIX = ".meta.json"
UPLOADED_SUFFIX = ".uploaded"
SCHEMA_VERSION = 1
CHUNK = 1 << 20
SHA256 = re.compile(r"[0-9a-f]{64}")
# NAME_MAX (255) less the longest sidecar temp name: ".<name>.meta.json.XXXXXXXX.tmp".
MAX_NAME_BYTES = 255 - len("." + META_SUFFIX + ".XXXXXXXX.tmp")


def fallback_dir(config: Config) -> Path:
    return Path(config.state_dir) / "fallback-uploads"


def sha256_of(path: Path, kind: files.Kind = files.FALLBACK_DATA) -> tuple[str, int]:
    """(sha256, size) of a regular file, read without following a symlink."""
    fd, _ = files.open_regular(path, kind)
    h, size = hashlib.sha256(), 0
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_key(key: Any) -> str:
    """An object key that cannot escape its prefix: relative, no `..`, no backslash."""
    if (
        not isinstance(key, str)
        or not key
        or key.startswith("/")
        or "\\" in key
        or any(part in ("..", ".", "") for part in key.split("/"))
        or "\x00" in key
    ):
        raise ValueError(
            f"object key {key!r} is absolute, empty or has a '..', '.' or empty segment"
        )
    return key


@dataclass(frozen=True)
class UploadResult:
    key: str
    stored: bool
    fallback: Path | None = None
    error: str | None = None


def upload(
    config: Config, path: Path, key: str, log: logging.Logger, content_type: str | None = None
) -> UploadResult:
    """Store path at key; on any failure keep it for m10-retry-r2-fallbacks instead.

    Keeping it can fail too (a full state disk): that raises WriteFailed naming the
    file, and the caller keeps its own record that the upload is still owed."""
    from botocore.exceptions import BotoCoreError, ClientError

    from m10jobs.edges import storage

    check_key(key)
    bucket = storage.bucket(config)
    ctype = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    data = files.read_bytes(path, files.UPLOAD_DATA)
    assert data is not None
    sha = hashlib.sha256(data).hexdigest()
    try:
        storage.put_verified(storage.client(config), bucket, key, path, sha, len(data), ctype)
    except (BotoCoreError, ClientError, storage.StoredMismatch) as exc:
        error = f"{type(exc).__name__}: {exc}"
        kept = retry_local_fallback(config, data, path.name, bucket, key, ctype, error)
        log.warning(
            "upload of %s to s3://%s/%s failed (%s); kept in %s for m10-retry-r2-fallbacks",
            path,
            bucket,
            key,
            error,
            kept,
        )
        return UploadResult(key, False, kept, error)
    log.info("uploaded %s to s3://%s/%s", path, bucket, key, extra={"sha256": sha})
    for old in supersede(fallback_dir(config), bucket, key, sha):
        log.info("older fallback %s of s3://%s/%s superseded", old.path.name, bucket, key)
    return UploadResult(key, True)


def retry_local_fallback(
    config: Config, data: bytes, basename: str, bucket: str, key: str, content_type: str, error: str
) -> Path:
    """Keep data for a later upload: copy first, then its meta (the commit point).

    A pending fallback of the same key and content is reused (attempts + 1).
    """
    directory = fallback_dir(config)
    files.make_dir(directory)
    sha = hashlib.sha256(data).hexdigest()
    for entry in pending(directory):
        if len(os.fsencode(entry.path.name)) > MAX_NAME_BYTES:
            continue  # its meta cannot be rewritten; the retry job reports it
        meta = entry.read_meta_or_none()
        if (
            meta
            and meta.get("key") == key
            and meta.get("sha256") == sha
            and meta.get("bucket") == bucket
        ):
            with entry.locked():
                meta["attempts"] = int(meta.get("attempts", 0)) + 1
                meta["last_attempt"], meta["last_error"] = now_iso(), error
                atomic_write_json(entry.meta_path, meta)
            return entry.path
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{stamp}-{sha[:12]}-{basename}"
    while len(os.fsencode(name)) > MAX_NAME_BYTES:  # keep every sidecar's name writable
        name = name[:-1]
    entry = Entry(directory / name)
    atomic_write(entry.path, data, mode=0o640)
    first = now_iso()
    atomic_write_json(
        entry.meta_path,
        {
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "bucket": bucket,
            "key": key,
            "size": len(data),
            "sha256": sha,
            "content_type": content_type,
            "first_failure": first,
            "last_attempt": first,
            "attempts": 1,
            "last_error": error,
        },
        mode=0o640,
    )
    return entry.path


@dataclass(frozen=True)
class Entry:
    """One fallback file and its sidecars."""

    path: Path

    @property
    def meta_path(self) -> Path:
        return self.path.with_name(self.path.name + META_SUFFIX)

    @property
    def uploaded_path(self) -> Path:
        return self.path.with_name(self.path.name + UPLOADED_SUFFIX)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Held around read-modify-write of the meta file."""
        with file_lock(self.path.with_name(self.path.name + ".entry")):
            yield

    def read_meta_or_none(self) -> dict[str, Any] | None:
        """The meta when it is valid, else None (for lookups that may pass a bad entry by)."""
        try:
            return read_meta(self)
        except M10Error:
            return None


def _iso_aware(value: Any, field: str) -> None:
    if not isinstance(value, str):
        raise ValueError(f"field {field!r} is not a timestamp string (got {value!r})")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"field {field!r} is not ISO 8601 (got {value!r})") from None
    if ts.tzinfo is None:
        raise ValueError(f"field {field!r} has no time zone (got {value!r})")


def _meta_schema(obj: Any) -> dict[str, Any]:
    meta = files.json_object({"bucket": str, "key": str, "size": int, "sha256": str})(obj)
    check_key(meta["key"])
    if not meta["bucket"] or meta["size"] < 0 or not SHA256.fullmatch(meta["sha256"]):
        raise ValueError("bucket empty, size negative or sha256 not 64 hex digits")
    attempts = meta.get("attempts", 0)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
        raise ValueError(f"field 'attempts' is not a count (got {attempts!r})")
    for field in ("first_failure", "last_attempt"):
        if field in meta:
            _iso_aware(meta[field], field)
    return meta


def read_meta(entry: Entry) -> dict[str, Any]:
    """The entry's meta, schema-checked (BadInput naming the file when it is not)."""
    meta: dict[str, Any] = files.read_json(
        entry.meta_path, files.FALLBACK_META, schema=_meta_schema
    )
    return meta


def _marker_schema(obj: Any) -> dict[str, Any]:
    marker = files.json_object({"bucket": str, "key": str, "sha256": str})(obj)
    if not SHA256.fullmatch(marker["sha256"]):
        raise ValueError("sha256 is not 64 hex digits")
    return marker


def marker_problem(entry: Entry, meta: dict[str, Any] | None = None) -> str | None:
    """Why the entry's `.uploaded` marker cannot be trusted, or None when it is verified:
    it parses, names the meta's bucket and key, and its sha256 is the meta's and the
    file's.  (An empty marker once made retention delete an upload that never happened.)"""
    try:
        marker = files.read_json(entry.uploaded_path, files.UPLOADED_MARKER, schema=_marker_schema)
        meta = meta or read_meta(entry)
        sha, _ = sha256_of(entry.path)
    except FileNotFoundError:
        return f"fallback file {entry.path} is missing"
    except M10Error as exc:
        return str(exc)
    if (marker["bucket"], marker["key"], marker["sha256"]) != (
        meta["bucket"],
        meta["key"],
        meta["sha256"],
    ):
        return f"upload marker {entry.uploaded_path} does not match its meta"
    if sha != meta["sha256"]:
        return f"fallback file {entry.path} no longer matches its meta and marker (sha256)"
    return None


def entries(directory: Path) -> list[Entry]:
    """Committed fallbacks (meta present), by name (= age); sidecars and temps excluded."""
    if not directory.is_dir():
        return []
    found = []
    for meta in sorted(directory.glob("*" + META_SUFFIX)):
        entry = Entry(meta.with_name(meta.name.removesuffix(META_SUFFIX)))
        if not entry.path.name.startswith("."):
            found.append(entry)
    return found


def pending(directory: Path) -> list[Entry]:
    """Committed fallbacks without a `.uploaded` marker (existence only: the retry job
    checks the markers that exist with marker_problem)."""
    return [e for e in entries(directory) if not os.path.lexists(e.uploaded_path)]


@dataclass
class Checked:
    entry: Entry
    meta: dict[str, Any]


def validate(entry: Entry) -> Checked:
    """Meta well-formed, key safe, name short enough for its sidecars, file a regular
    file (never a symlink) with the recorded size and sha256.  BadInput naming the file."""
    meta = read_meta(entry)
    if entry.uploaded_path.is_dir() and not entry.uploaded_path.is_symlink():
        raise BadInput(
            f"upload marker {entry.uploaded_path}: is a directory, so no marker can "
            "be written after an upload; refused before uploading: remove it"
        )
    if len(os.fsencode(entry.path.name)) > MAX_NAME_BYTES:
        raise BadInput(
            f"fallback file {entry.path}: name is longer than {MAX_NAME_BYTES} "
            "bytes, its marker could not be written; refused before uploading: "
            "rename it and its meta to a shorter name"
        )
    try:
        sha, size = sha256_of(entry.path)
    except FileNotFoundError:
        raise BadInput(
            f"fallback file {entry.path}: missing for {entry.meta_path.name}; "
            "restore it, or move its meta out of fallback-uploads"
        ) from None
    if size != meta["size"] or sha != meta["sha256"]:
        raise BadInput(
            f"fallback file {entry.path}: content no longer matches its meta "
            "(size/sha256); refused, left in place: restore it or remove it and its "
            "meta by hand"
        )
    return Checked(entry, meta)


def mark_uploaded(entry: Entry, meta: dict[str, Any], etag: str) -> None:
    atomic_write_json(
        entry.uploaded_path,
        {
            "bucket": meta["bucket"],
            "key": meta["key"],
            "size": meta["size"],
            "sha256": meta["sha256"],
            "etag": etag,
            "uploaded_at": now_iso(),
            "attempts": int(meta.get("attempts", 0)) + 1,
        },
    )


def mark_superseded(entry: Entry, meta: dict[str, Any], stored_sha256: str) -> None:
    atomic_write_json(
        entry.uploaded_path,
        {
            "bucket": meta["bucket"],
            "key": meta["key"],
            "sha256": meta["sha256"],
            "superseded": True,
            "stored_sha256": stored_sha256,
            "uploaded_at": now_iso(),
        },
    )


def supersede(
    directory: Path, bucket: str, key: str, sha256: str, keep: Entry | None = None
) -> list[Entry]:
    """Older pending versions of an object just stored: mark them `.uploaded`
    (superseded) so a later retry never overwrites newer content with them."""
    done = []
    for entry in pending(directory):
        meta = entry.read_meta_or_none()
        if entry != keep and meta and meta["bucket"] == bucket and meta["key"] == key:
            mark_superseded(entry, meta, sha256)
            done.append(entry)
    return done


def record_failure(entry: Entry, error: str) -> dict[str, Any]:
    with entry.locked():
        meta = read_meta(entry)
        meta["attempts"] = int(meta.get("attempts", 0)) + 1
        meta["last_attempt"], meta["last_error"] = now_iso(), error
        atomic_write_json(entry.meta_path, meta, mode=0o640)
    return meta


def age_hours(meta: dict[str, Any]) -> float:
    try:
        first = datetime.fromisoformat(str(meta.get("first_failure")))
    except ValueError:
        return 0.0
    if first.tzinfo is None:  # validated metas always carry one; be safe anyway
        first = first.replace(tzinfo=UTC)
    # This host's clock: first_failure was stamped by it (a fallback file never leaves its
    # host), and the age only ranks and reports; it decides nothing finished.
    return (datetime.now(UTC) - first).total_seconds() / 3600
