"""Uploads that never lose a file: `upload()` stores to R2/S3, and when the store
fails, `retry_local_fallback()` keeps a copy plus `<name>.meta.json` under
`$M10_STATE_DIR/fallback-uploads/` for `m10-retry-r2-fallbacks` to retry.

The meta file is written last and is the commit point: a copy without meta
(a crash in between) is ignored.  Each fallback gets its own name (time +
sha prefix + basename), so two pending versions of one key are retried oldest
first and the newest content ends up in the store.  boto3 is imported lazily.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mimetypes
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from m10jobs.config import Config
from m10jobs.edges.files import atomic_write, atomic_write_json, file_lock
from m10jobs.errors import BadInput

META_SUFFIX = ".meta.json"
UPLOADED_SUFFIX = ".uploaded"
SCHEMA_VERSION = 1
CHUNK = 1 << 20


def fallback_dir(config: Config) -> Path:
    return Path(config.state_dir) / "fallback-uploads"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_key(key: Any) -> str:
    """An object key that cannot escape its prefix: relative, no `..`, no backslash."""
    if not isinstance(key, str) or not key or key.startswith("/") or "\\" in key \
            or any(part in ("..", ".", "") for part in key.split("/")) \
            or "\x00" in key:
        raise ValueError(f"object key {key!r} is absolute, empty or has a '..', '.' or "
                         "empty segment")
    return key


@dataclass(frozen=True)
class UploadResult:
    key: str
    stored: bool
    fallback: Path | None = None
    error: str | None = None


def upload(config: Config, path: Path, key: str, log: logging.Logger,
           content_type: str | None = None) -> UploadResult:
    """Store path at key; on any failure keep it for m10-retry-r2-fallbacks instead."""
    from botocore.exceptions import BotoCoreError, ClientError

    from m10jobs.edges import storage

    check_key(key)
    bucket = storage.bucket(config)
    ctype = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    try:
        storage.put_verified(storage.client(config), bucket, key, path, sha, len(data), ctype)
    except (BotoCoreError, ClientError, storage.StoredMismatch) as exc:
        error = f"{type(exc).__name__}: {exc}"
        kept = retry_local_fallback(config, data, path.name, bucket, key, ctype, error)
        log.warning("upload of %s to s3://%s/%s failed (%s); kept in %s for "
                    "m10-retry-r2-fallbacks", path, bucket, key, error, kept)
        return UploadResult(key, False, kept, error)
    log.info("uploaded %s to s3://%s/%s", path, bucket, key, extra={"sha256": sha})
    for old in supersede(fallback_dir(config), bucket, key, sha):
        log.info("older fallback %s of s3://%s/%s superseded", old.path.name, bucket, key)
    return UploadResult(key, True)


def retry_local_fallback(config: Config, data: bytes, basename: str, bucket: str, key: str,
                         content_type: str, error: str) -> Path:
    """Keep data for a later upload: copy first, then its meta (the commit point).

    A pending fallback of the same key and content is reused (attempts + 1).
    """
    directory = fallback_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256(data).hexdigest()
    for entry in pending(directory):
        meta = entry.read_meta_or_none()
        if meta and meta.get("key") == key and meta.get("sha256") == sha \
                and meta.get("bucket") == bucket:
            with entry.locked():
                meta["attempts"] = int(meta.get("attempts", 0)) + 1
                meta["last_attempt"], meta["last_error"] = now_iso(), error
                atomic_write_json(entry.meta_path, meta)
            return entry.path
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{stamp}-{sha[:12]}-{basename}"
    entry = Entry(directory / name)
    atomic_write(entry.path, data, mode=0o640)
    first = now_iso()
    atomic_write_json(entry.meta_path, {
        "schema_version": SCHEMA_VERSION, "name": name, "bucket": bucket, "key": key,
        "size": len(data), "sha256": sha, "content_type": content_type,
        "first_failure": first, "last_attempt": first, "attempts": 1, "last_error": error,
    }, mode=0o640)
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
        try:
            meta = json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None


def pending(directory: Path) -> list[Entry]:
    """Committed fallbacks (meta present) with no `.uploaded` marker, by name (= age)."""
    if not directory.is_dir():
        return []
    entries = []
    for meta in sorted(directory.glob("*" + META_SUFFIX)):
        entry = Entry(meta.with_name(meta.name.removesuffix(META_SUFFIX)))
        if not entry.uploaded_path.exists() and not entry.path.name.startswith("."):
            entries.append(entry)
    return entries


@dataclass
class Checked:
    entry: Entry
    meta: dict[str, Any]


def validate(entry: Entry) -> Checked:
    """Meta well-formed, key safe, file present with the recorded size and sha256.

    Raises BadInput naming the file and what is wrong.
    """
    where = entry.meta_path
    try:
        meta = json.loads(where.read_text())
    except OSError as exc:
        raise BadInput(f"{where}: cannot read: {exc}") from None
    except ValueError as exc:
        raise BadInput(f"{where}: not valid JSON ({exc}); fix or move it away") from None
    if not isinstance(meta, dict):
        raise BadInput(f"{where}: expected a JSON object")
    for field, kind in (("bucket", str), ("key", str), ("size", int), ("sha256", str)):
        if not isinstance(meta.get(field), kind):
            raise BadInput(f"{where}: field {field!r} missing or not a {kind.__name__}")
    try:
        check_key(meta["key"])
    except ValueError as exc:
        raise BadInput(f"{where}: {exc}; refused, left in place (fix the key or remove "
                       "the file by hand)") from None
    if not entry.path.is_file():
        raise BadInput(f"{entry.path}: data file missing for {where.name}")
    size = entry.path.stat().st_size
    if size != meta["size"] or sha256_of(entry.path) != meta["sha256"]:
        raise BadInput(f"{entry.path}: content no longer matches its meta (size/sha256); "
                       "refused, left in place: restore it or remove it and its meta by hand")
    return Checked(entry, meta)


def mark_uploaded(entry: Entry, meta: dict[str, Any], etag: str) -> None:
    atomic_write_json(entry.uploaded_path, {
        "bucket": meta["bucket"], "key": meta["key"], "size": meta["size"],
        "sha256": meta["sha256"], "etag": etag, "uploaded_at": now_iso(),
        "attempts": int(meta.get("attempts", 0)) + 1})


def supersede(directory: Path, bucket: str, key: str, sha256: str,
              keep: Entry | None = None) -> list[Entry]:
    """Older pending versions of an object just stored: mark them `.uploaded`
    (superseded) so a later retry never overwrites newer content with them."""
    done = []
    for entry in pending(directory):
        meta = entry.read_meta_or_none()
        if entry != keep and meta and meta.get("bucket") == bucket and meta.get("key") == key:
            atomic_write_json(entry.uploaded_path, {
                "bucket": bucket, "key": key, "sha256": meta.get("sha256"),
                "superseded": True, "stored_sha256": sha256, "uploaded_at": now_iso()})
            done.append(entry)
    return done


def record_failure(entry: Entry, error: str) -> dict[str, Any]:
    with entry.locked():
        meta = json.loads(entry.meta_path.read_text())
        meta["attempts"] = int(meta.get("attempts", 0)) + 1
        meta["last_attempt"], meta["last_error"] = now_iso(), error
        atomic_write_json(entry.meta_path, meta, mode=0o640)
    return meta


def age_hours(meta: dict[str, Any]) -> float:
    try:
        first = datetime.fromisoformat(str(meta.get("first_failure")))
    except ValueError:
        return 0.0
    return (datetime.now(UTC) - first).total_seconds() / 3600

