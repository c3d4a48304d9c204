"""Object storage (R2 or any S3-compatible store) through boto3.

boto3 is imported here only (it costs ~300 ms), by the jobs that upload:
edges/fallback.py and retention import this module when they upload, not at
their top (a pass with no bucket never pays for it); the retry pass
(jobs/fallback/retry.py), which always uploads, imports it at its top.
Explicit timeouts and a bounded retry: a pass never hangs on a dead endpoint.
Credentials come from boto3's usual chain (env, shared files, instance role).

Uploads are verified by the store, not by downloading them again: a single
PUT carries the file's SHA-256 (`ChecksumSHA256`), which S3 and R2 check
before storing (a mismatch is a `BadDigest` error) and echo back; a file over
MULTIPART_THRESHOLD goes multipart (`upload_file`), each part with its SHA-256
checked by the store, and the composite checksum the store reports for the
object is compared with the one computed from the file (for multipart
uploads R2, like S3, offers SHA-256 only in this composite form, not as a
full-object checksum).  A store that answers without a checksum (no support
for them) gets the old check: read the object back and hash it.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from s3transfer.utils import ChunksizeAdjuster

from m10jobs.config import Config

CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30
MAX_ATTEMPTS = 3
# One PUT may carry up to 5 GiB on S3 and a little less on R2; far below that a
# failed transfer is cheaper to retry part by part.
MULTIPART_THRESHOLD = 256 * 1024 * 1024
PART_SIZE = 64 * 1024 * 1024
CHUNK = 1 << 20


def client(config: Config) -> Any:
    """An S3 client for M10_R2_ENDPOINT_URL (None: AWS's own endpoint)."""
    return boto3.client(
        "s3",
        endpoint_url=config.r2_endpoint_url,
        config=BotoConfig(
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        ),
    )


def bucket(config: Config) -> str:
    return config.require("r2_bucket")


class StoredMismatch(Exception):
    """What the store holds (or was about to be sent) differs from what was recorded."""


@dataclass(frozen=True)
class Stored:
    etag: str
    verified_by: str  # "store checksum" | "read back"


def b64digest(digest: bytes) -> str:
    """How S3 spells a checksum (base64 of the raw digest)."""
    return base64.b64encode(digest).decode()


def file_checksums(path: Path, part_size: int) -> tuple[str, str, int]:
    """One read of the file: its sha256 (hex), the composite SHA-256 a store reports
    for a multipart upload of it in parts of part_size ("<b64>-<parts>"), its size."""
    whole, parts, size = hashlib.sha256(), [], 0
    with path.open("rb") as f:
        while True:
            part, left = hashlib.sha256(), part_size
            while left and (chunk := f.read(min(CHUNK, left))):
                part.update(chunk)
                whole.update(chunk)
                left -= len(chunk)
            if left == part_size:
                break
            parts.append(part.digest())
            size += part_size - left
    composite = b64digest(hashlib.sha256(b"".join(parts)).digest())
    return whole.hexdigest(), f"{composite}-{len(parts)}", size


def put_verified(
    s3: Any,
    bucket: str,
    key: str,
    path: Path,
    sha256: str,
    size: int,
    content_type: str,
    *,
    multipart_threshold: int = MULTIPART_THRESHOLD,
    part_size: int = PART_SIZE,
) -> Stored:
    """Store path at key, verified to hold exactly size bytes with that sha256.

    Raises StoredMismatch (nothing trustworthy stored) or boto's own errors.
    """
    from m10jobs.edges import files

    extra = {"ContentType": content_type, "Metadata": {"sha256": sha256}}
    # One fd for the checks and the upload: a path swapped after the entry was checked
    # (a planted symlink, another file renamed over it) is never what gets stored.
    fd, _ = files.open_regular(path, files.FALLBACK_DATA)
    with os.fdopen(fd, "rb") as body:
        if size <= multipart_threshold:
            expected = b64digest(bytes.fromhex(sha256))
            # ChecksumAlgorithm too: some stores record the checksum only when it is named
            resp = s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=body,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=expected,
                **extra,
            )
            reported = resp.get("ChecksumSHA256")
            etag = str(resp.get("ETag", "")).strip('"')
        else:
            # /proc/self/fd/N reopens this very inode, whatever the path names now; by
            # filename, s3transfer streams each part from disk instead of buffering it.
            opened = Path(f"/proc/self/fd/{body.fileno()}")
            part_size = ChunksizeAdjuster().adjust_chunksize(part_size, size)
            whole, expected, got = file_checksums(opened, part_size)
            if (whole, got) != (sha256, size):
                raise StoredMismatch(
                    f"{path} changed: {got} bytes sha256 {whole[:12]}, "
                    f"expected {size} bytes sha256 {sha256[:12]}; not uploaded"
                )
            s3.upload_file(
                str(opened),
                bucket,
                key,
                ExtraArgs={**extra, "ChecksumAlgorithm": "SHA256"},
                Config=TransferConfig(
                    multipart_threshold=multipart_threshold, multipart_chunksize=part_size
                ),
            )
            head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
            reported = head.get("ChecksumSHA256")
            etag = str(head.get("ETag", "")).strip('"')
    if reported is None:  # the store does not do checksums: read it back
        _read_back(s3, bucket, key, sha256, size)
        return Stored(etag, "read back")
    if reported not in (expected, expected.split("-")[0]):  # with or without "-<parts>"
        raise StoredMismatch(
            f"s3://{bucket}/{key}: the store reports SHA-256 {reported}, expected {expected}"
        )
    return Stored(etag, "store checksum")


def _read_back(s3: Any, bucket: str, key: str, sha256: str, size: int) -> None:
    obj = s3.get_object(Bucket=bucket, Key=key)
    h, got = hashlib.sha256(), 0
    for chunk in obj["Body"].iter_chunks(CHUNK):
        h.update(chunk)
        got += len(chunk)
    if got != size or h.hexdigest() != sha256:
        raise StoredMismatch(
            f"s3://{bucket}/{key} holds {got} bytes sha256 {h.hexdigest()[:12]}"
            f", expected {size} bytes sha256 {sha256[:12]}"
        )
