"""Atomic artifacts: temp file in the same directory, fsync, rename, fsync dir.

Every marker, checkpoint and report goes through atomic_write under a
filelock, so a reader (or a crash) sees the old complete content or the new
one, never a torn file.  The lock is reentrant within a process, so a
read-modify-write (CSV append) holds file_lock() around read and write.

One lock file per directory (`.m10jobs.lock`), never one per artifact: a lock
file cannot be removed safely while another process may be waiting on it, so
per-artifact locks would pile up for ever (one per canary report, 288 a day).
Every write in a directory is short, so serialising them costs nothing.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_TIMEOUT_S = 60


DIR_LOCK_NAME = ".m10jobs.lock"


def lock_path(path: Path) -> Path:
    """The lock that serialises writers of path: its directory's one lock file."""
    return path.parent / DIR_LOCK_NAME


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    from filelock import FileLock  # not on the start-up path of a skipped pass

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path(path), timeout=timeout, is_singleton=True):
        yield


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, *, mode: int = 0o644,
                 lock: bool = True) -> None:
    """lock=False where the directory is not ours to leave a lock file in (the
    systemd unit directory): there the caller is the only writer."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    with file_lock(path) if lock else contextlib.nullcontext():
        _remove_stale_temps(path)
        import tempfile  # imported here: not on the start-up path of a skipped pass

        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(path.parent)


def _remove_stale_temps(path: Path) -> None:
    """Temp files a killed writer left behind, and the per-artifact lock file that
    earlier releases kept beside each artifact; safe to remove while we hold the lock."""
    leftovers = [*path.parent.glob(f".{glob.escape(path.name)}.*.tmp"),
                 path.with_name(f".{path.name}.lock")]
    for stale in leftovers:
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def atomic_write_json(path: Path, obj: Any, *, mode: int = 0o644) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", mode=mode)


def append_line(path: Path, line: str) -> None:
    """Append one line to an append-only log (e.g. JSON lines) and fsync it.

    The caller holds file_lock(path) when a read-decide-append must be atomic.
    A tail torn by a crash mid-append (no newline yet) was never a whole record:
    it is cut off first, so every line in the log stays a whole record.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.ftruncate(fd, os.pread(fd, size, 0).rfind(b"\n") + 1)
        os.write(fd, (line.rstrip("\n") + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(path.parent)
