"""storage.put_verified against moto's S3 server: the SHA-256 goes with the PUT and
the store's answer is the check; big files go multipart, checked by the composite
checksum; a store that answers without checksums gets the object read back.

moto stores and echoes a checksum sent with a single PUT without recomputing it
(S3 and R2 reject a wrong one with BadDigest), but computes a multipart upload's
composite checksum from the parts it received, so that path is checked for real.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from devenv.services import S3
from m10jobs.edges import storage

MIB = 1024 * 1024
SMALL_MULTIPART = {"multipart_threshold": 8 * MIB, "part_size": 5 * MIB}  # 5 MiB: S3's minimum
_n = itertools.count()


def new_client(server: S3) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=S3.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3.env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


@pytest.fixture
def s3(s3_server: S3) -> Any:
    client = new_client(s3_server)
    client.bucket = f"up{os.getpid()}-{next(_n)}"
    client.create_bucket(Bucket=client.bucket)
    return client


def calls(client: Any, operation: str) -> list[str]:
    """Which requests of this kind the client sends (observed, not altered)."""
    seen: list[str] = []
    client.meta.events.register(f"before-call.s3.{operation}", lambda **kw: seen.append(operation))
    return seen


def file_of(tmp_path: Path, size: int) -> tuple[Path, str]:
    path = tmp_path / f"f{size}.bin"
    path.write_bytes(os.urandom(size))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def put(s3: Any, path: Path, sha: str, key: str = "k/f.bin", **kw: Any) -> storage.Stored:
    return storage.put_verified(
        s3, s3.bucket, key, path, sha, path.stat().st_size, "application/octet-stream", **kw
    )


def stored_bytes(s3: Any, key: str = "k/f.bin") -> bytes:
    return s3.get_object(Bucket=s3.bucket, Key=key)["Body"].read()


def test_single_put_carries_the_sha256_and_is_not_downloaded_again(s3: Any, tmp_path: Path) -> None:
    path, sha = file_of(tmp_path, 200_000)
    gets = calls(s3, "GetObject")
    stored = put(s3, path, sha)
    assert stored.verified_by == "store checksum" and gets == []
    head = s3.head_object(Bucket=s3.bucket, Key="k/f.bin", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == storage.b64digest(bytes.fromhex(sha))  # sent with the PUT
    assert head["Metadata"]["sha256"] == sha and stored.etag == head["ETag"].strip('"')
    assert stored_bytes(s3) == path.read_bytes()


def test_over_the_threshold_goes_multipart_checked_by_the_composite(
    s3: Any, tmp_path: Path
) -> None:
    path, sha = file_of(tmp_path, 11 * MIB + 123)
    parts, gets = calls(s3, "UploadPart"), calls(s3, "GetObject")
    stored = put(s3, path, sha, **SMALL_MULTIPART)
    assert stored.verified_by == "store checksum" and gets == []
    assert len(parts) == 3 and stored.etag.endswith("-3")
    assert stored_bytes(s3) == path.read_bytes()


def test_composite_checksum_matches_what_the_store_computes(tmp_path: Path) -> None:
    path, sha = file_of(tmp_path, 2 * 5 * MIB + 7)
    whole, composite, size = storage.file_checksums(path, 5 * MIB)
    digests = [
        hashlib.sha256(path.read_bytes()[i : i + 5 * MIB]).digest() for i in range(0, size, 5 * MIB)
    ]
    assert (whole, size) == (sha, path.stat().st_size)
    assert composite == f"{storage.b64digest(hashlib.sha256(b''.join(digests)).digest())}-3"


def test_a_file_that_changed_since_it_was_hashed_is_not_uploaded(s3: Any, tmp_path: Path) -> None:
    path, sha = file_of(tmp_path, 9 * MIB)
    other, _ = file_of(tmp_path, 9 * MIB + 1)
    other.rename(path)
    with pytest.raises(storage.StoredMismatch, match="changed"):
        put(s3, path, sha, **SMALL_MULTIPART)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=s3.bucket, Key="k/f.bin")


def overwrite_after(s3: Any, server: S3, operation: str) -> None:
    """Another writer replaces the object right after our request: what the store
    holds then is not what we sent."""
    other = new_client(server)

    def replace(**kw: Any) -> None:
        other.put_object(
            Bucket=s3.bucket, Key="k/f.bin", Body=b"something else", ChecksumAlgorithm="SHA256"
        )

    s3.meta.events.register(f"after-call.s3.{operation}", replace)


def test_multipart_object_replaced_in_the_store_is_a_mismatch(
    s3: Any, s3_server: S3, tmp_path: Path
) -> None:
    path, sha = file_of(tmp_path, 11 * MIB)
    overwrite_after(s3, s3_server, "CompleteMultipartUpload")
    with pytest.raises(storage.StoredMismatch, match="the store reports SHA-256"):
        put(s3, path, sha, **SMALL_MULTIPART)


def no_checksums(s3: Any) -> None:
    """The answers of a store without checksum support: no ChecksumSHA256 in them."""

    def strip(parsed: dict[str, Any], **kw: Any) -> None:
        parsed.pop("ChecksumSHA256", None)

    for operation in ("PutObject", "HeadObject"):
        s3.meta.events.register(f"after-call.s3.{operation}", strip)


@pytest.mark.parametrize(
    "size, kw", [(100_000, {}), (11 * MIB, SMALL_MULTIPART)], ids=["single", "multipart"]
)
def test_a_store_without_checksums_gets_the_object_read_back(
    s3: Any, tmp_path: Path, size: int, kw: dict[str, int]
) -> None:
    path, sha = file_of(tmp_path, size)
    no_checksums(s3)
    gets = calls(s3, "GetObject")
    assert put(s3, path, sha, **kw).verified_by == "read back" and gets == ["GetObject"]


def test_read_back_catches_what_the_store_got_wrong(s3: Any, s3_server: S3, tmp_path: Path) -> None:
    path, sha = file_of(tmp_path, 100_000)
    no_checksums(s3)
    overwrite_after(s3, s3_server, "PutObject")
    with pytest.raises(storage.StoredMismatch, match="holds 14 bytes"):
        put(s3, path, sha)


def test_the_meta_sha256_is_what_the_store_is_asked_to_verify(s3: Any, tmp_path: Path) -> None:
    """The checksum sent is the one recorded earlier, not one computed from the
    bytes at upload time: a store that verifies refuses content that changed."""
    path, sha = file_of(tmp_path, 1000)
    sent: list[Any] = []
    s3.meta.events.register(
        "before-call.s3.PutObject", lambda params, **kw: sent.append(params["headers"])
    )
    put(s3, path, "00" * 32)  # moto keeps whatever was sent (S3/R2: BadDigest)
    assert sent[0]["x-amz-checksum-sha256"] == storage.b64digest(bytes(32))
    assert sha != "00" * 32


@pytest.mark.parametrize(
    ("size", "kw", "operation"),
    [
        (200_000, {}, "PutObject"),
        (9 * MIB, SMALL_MULTIPART, "CreateMultipartUpload"),
    ],
)
def test_a_path_swapped_after_the_checks_is_never_what_gets_stored(
    s3: Any, tmp_path: Path, size: int, kw: dict[str, int], operation: str
) -> None:
    """Another file renamed over the path once the upload began (the window between an
    entry's checks and its upload) changes nothing: the opened file is what is sent."""
    path, sha = file_of(tmp_path, size)
    original = path.read_bytes()
    intruder = tmp_path / "intruder"
    intruder.write_bytes(os.urandom(size))

    def swap(**_: Any) -> None:
        if intruder.exists():
            os.replace(intruder, path)

    s3.meta.events.register(f"before-call.s3.{operation}", swap)
    put(s3, path, sha, **kw)
    assert not intruder.exists(), "the swap did not happen: the test proves nothing"
    assert stored_bytes(s3) == original
