"""A fallback backlog in seconds, for tests and benchmarks: entries as
retry_local_fallback() leaves them (same names and meta), written without its
fsyncs and lock, since nothing else writes the directory while they are planted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from m10jobs.edges import fallback


def plant(directory: Path, bucket: str, n: int, *, size: int = 64, prefix: str = "k") -> None:
    """n pending entries of distinct keys `<prefix>/<i>.csv`, each of size bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    first = fallback.now_precise()
    for i in range(n):
        data = f"{prefix},{i}\n".encode().ljust(size, b".")
        sha = hashlib.sha256(data).hexdigest()
        key = f"{prefix}/{i}.csv"
        name = fallback.entry_name(bucket, key, sha, 0, f"{i}.csv")
        (directory / name).write_bytes(data)
        meta = {
            "schema_version": fallback.SCHEMA_VERSION,
            "name": name,
            "bucket": bucket,
            "key": key,
            "size": len(data),
            "sha256": sha,
            "content_type": "text/csv",
            "first_failure": first[:19] + "+00:00",
            "last_attempt": first[:19] + "+00:00",
            "version_at": first,
            "attempts": 1,
            "last_error": "planted",
        }
        (directory / (name + fallback.META_SUFFIX)).write_text(json.dumps(meta))
