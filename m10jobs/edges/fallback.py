"""Uploads that never lose a file: `upload()` stores to R2/S3, and when the store
fails, `retry_local_fallback()` keeps a copy plus `<name>.meta.json` under
`$M10_STATE_DIR/fallback-uploads/` for `m10-retry-r2-fallbacks` to retry.

The meta file is written last and is the commit point: a copy without meta
(a crash in between) is ignored.  A fallback's name is derived from what it
holds: a hash of its bucket and key, its sha256 and a generation
(`<key hash>-<sha prefix>-<gen>-<basename>`), so the writer finds a pending copy
of the same key and content by probing a few names, never by reading the
directory: its cost does not grow with the backlog.  Versions of one key are
ordered by `version_at` (when that content was last handed over; earlier
releases' names began with that time instead), and the newest content ends up in
the store.  A direct upload that succeeds leaves `<key hash>.stored.json` (the
key's stored note) so the retry job never overwrites it with an older pending
version.  Everything here is read through the files edge's safe reader: a
planted symlink is never followed (so never uploaded), and a `.uploaded` marker
counts only when it parses and its sha256 matches the meta (and, for retention,
the file: marker_problem).  boto3 is imported lazily.
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
STORED_SUFFIX = ".stored.json"
GENERATIONS = 8
"""Names probed per key and content: a generation is taken when an earlier one is
uploaded (its marker waits for retention), bad or a hash collision."""
LEGACY_NAME = re.compile(r"(\d{8}T\d{12})Z-")
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
    note_stored(fallback_dir(config), bucket, key, sha)
    return UploadResult(key, True)


def key_hash(bucket: str, key: str) -> str:
    """What names a key's fallbacks and its stored note (NUL cannot occur in either)."""
    return hashlib.sha256(f"{bucket}\0{key}".encode()).hexdigest()[:32]


def entry_name(bucket: str, key: str, sha: str, gen: int, basename: str) -> str:
    """The name a fallback of this key and content takes in generation gen, cut to what
    leaves every sidecar's name writable."""
    name = f"{key_hash(bucket, key)}-{sha[:16]}-{gen}-{basename}"
    while len(os.fsencode(name)) > MAX_NAME_BYTES:
        name = name[:-1]
    return name


def now_precise() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def retry_local_fallback(
    config: Config, data: bytes, basename: str, bucket: str, key: str, content_type: str, error: str
) -> Path:
    """Keep data for a later upload: copy first, then its meta (the commit point).

    A pending fallback of the same key and content is reused (attempts + 1, and it is
    again the key's newest version).  Found by name, in at most GENERATIONS probes;
    under the directory's lock, so two writers never take one name.
    """
    directory = fallback_dir(config)
    files.make_dir(directory)
    sha = hashlib.sha256(data).hexdigest()
    now = now_precise()
    with file_lock(directory / META_SUFFIX):
        free: Entry | None = None
        for gen in range(GENERATIONS):
            entry = Entry(directory / entry_name(bucket, key, sha, gen, basename))
            taken = os.path.lexists(entry.meta_path) or os.path.lexists(entry.uploaded_path)
            if not taken:
                free = free or entry
                continue
            if os.path.lexists(entry.uploaded_path):
                continue  # uploaded (or its marker is bad): not ours to reopen
            meta = entry.read_meta_or_none()
            if meta and (meta["bucket"], meta["key"], meta["sha256"]) == (bucket, key, sha):
                meta["attempts"] = int(meta.get("attempts", 0)) + 1
                meta["last_attempt"], meta["last_error"] = now_iso(), error
                meta["version_at"] = now
                atomic_write_json(entry.meta_path, meta, mode=0o640, sweep=False)
                return entry.path
        if free is None:  # every generation taken: a name no other write can have
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            free = Entry(directory / entry_name(bucket, key, sha, 0, f"{stamp}-{basename}"))
        name = free.path.name
        atomic_write(free.path, data, mode=0o640, sweep=False)
        first = now_iso()
        atomic_write_json(
            free.meta_path,
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
                "version_at": now,
                "attempts": 1,
                "last_error": error,
            },
            mode=0o640,
            sweep=False,
        )
    return free.path


def stored_note_path(directory: Path, bucket: str, key: str) -> Path:
    return directory / (key_hash(bucket, key) + STORED_SUFFIX)


def note_stored(directory: Path, bucket: str, key: str, sha256: str) -> None:
    """After a direct upload: note when the key got this content, so that
    m10-retry-r2-fallbacks marks every older pending version of it superseded instead
    of overwriting newer content with it (one small file per key, found by name)."""
    if not directory.is_dir():
        return  # nothing was ever kept here, so nothing older can be pending
    atomic_write_json(
        stored_note_path(directory, bucket, key),
        {"bucket": bucket, "key": key, "sha256": sha256, "stored_at": now_precise()},
        mode=0o640,
        sweep=False,
    )


def _note_schema(obj: Any) -> dict[str, Any]:
    note = files.json_object({"bucket": str, "key": str, "sha256": str, "stored_at": str})(obj)
    if not SHA256.fullmatch(note["sha256"]):
        raise ValueError("sha256 is not 64 hex digits")
    _iso_aware(note["stored_at"], "stored_at")
    return note


STORED_NOTE = files.Kind(
    "stored note",
    64 * files.KiB,
    "older fallbacks of its key are left pending until it is fixed or removed "
    "(remove it if no direct upload of the key happened since they were kept)",
)


def read_stored_note(directory: Path, bucket: str, key: str) -> dict[str, Any] | None:
    """The key's stored note, None when there is none; BadInput when it is bad."""
    path = stored_note_path(directory, bucket, key)
    note: dict[str, Any] | None = files.read_json(
        path, STORED_NOTE, missing_ok=True, schema=_note_schema
    )
    if note is not None and (note["bucket"], note["key"]) != (bucket, key):
        raise STORED_NOTE.error(path, "names another bucket or key")
    return note


def stored_notes(directory: Path) -> list[Path]:
    return sorted(directory.glob("*" + STORED_SUFFIX)) if directory.is_dir() else []


def version_at(entry: Entry, meta: dict[str, Any]) -> datetime:
    """When this content was last handed over for its key: orders a key's versions.
    Entries of earlier releases carry it in their name (or only first_failure)."""
    if "version_at" in meta:
        return datetime.fromisoformat(meta["version_at"])
    if m := LEGACY_NAME.match(entry.path.name):
        return datetime.strptime(m[1], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
    if "first_failure" in meta:
        return datetime.fromisoformat(meta["first_failure"])
    return datetime.min.replace(tzinfo=UTC)


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
    for field in ("first_failure", "last_attempt", "version_at"):
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


def marker_problem(
    entry: Entry, meta: dict[str, Any] | None = None, *, check_file: bool = True
) -> str | None:
    """Why the entry's `.uploaded` marker cannot be trusted, or None when it is verified:
    it parses, names the meta's bucket and key, and its sha256 is the meta's and (with
    check_file, before retention deletes the copy) the file's.  (An empty marker once
    made retention delete an upload that never happened.)"""
    try:
        marker = files.read_json(entry.uploaded_path, files.UPLOADED_MARKER, schema=_marker_schema)
        meta = meta or read_meta(entry)
        sha = sha256_of(entry.path)[0] if check_file else meta["sha256"]
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
    checked = validate_meta(entry)
    check_file(checked)
    return checked


def validate_meta(entry: Entry) -> Checked:
    """What validate checks without reading the file (the cheap part, for a scan)."""
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
    return Checked(entry, meta)


def check_file(checked: Checked) -> None:
    """The file is regular (never a symlink) with the meta's size and sha256."""
    entry, meta = checked.entry, checked.meta
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


def _write_marker(entry: Entry, marker: dict[str, Any]) -> None:
    """A marker is written by the retry job alone (it holds the lease), from its upload
    threads: no directory lock and no sweep (the pass removes killed writers' temps)."""
    files.write_unique(entry.uploaded_path, files.json_bytes(marker))


def mark_uploaded(entry: Entry, meta: dict[str, Any], etag: str) -> None:
    _write_marker(
        entry,
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
    _write_marker(
        entry,
        {
            "bucket": meta["bucket"],
            "key": meta["key"],
            "sha256": meta["sha256"],
            "superseded": True,
            "stored_sha256": stored_sha256,
            "uploaded_at": now_iso(),
        },
    )


def remove_temps(directory: Path) -> None:
    """Temps of killed writers (the writes here skip the per-write sweep); under the
    directory's lock, so no write in flight loses its temp."""
    if directory.is_dir():
        with file_lock(directory / META_SUFFIX):
            files.remove_temps(directory)


def record_failure(entry: Entry, error: str) -> dict[str, Any]:
    with entry.locked():
        meta = read_meta(entry)
        meta["attempts"] = int(meta.get("attempts", 0)) + 1
        meta["last_attempt"], meta["last_error"] = now_iso(), error
        atomic_write_json(entry.meta_path, meta, mode=0o640, sweep=False)
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
