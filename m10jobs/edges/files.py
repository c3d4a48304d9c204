"""Atomic artifacts: temp file in the same directory, fsync, rename, fsync dir;
and the one safe way to read a file a job did not just write (read_bytes/
read_text/read_json, below).

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
import errno
import glob
import json
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m10jobs.errors import BadInput, ConfigError, M10Error, WriteFailed

LOCK_TIMEOUT_S = 60


DIR_LOCK_NAME = ".m10jobs.lock"


def lock_path(path: Path) -> Path:
    """The lock that serialises writers of path: its directory's one lock file."""
    return path.parent / DIR_LOCK_NAME


def make_dir(directory: Path) -> None:
    """Create directory (and parents): a failure is the one "cannot write" answer."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteFailed(exc.errno, exc.strerror, str(directory)) from exc


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold path's directory lock; a lock file that cannot be created (read-only or
    full directory) is WriteFailed naming it, like any other write."""
    from filelock import FileLock  # not on the start-up path of a skipped pass

    make_dir(path.parent)
    lock = FileLock(lock_path(path), timeout=timeout, is_singleton=True)
    try:
        lock.acquire()
    except OSError as exc:
        if exc.errno is None:  # a lock timeout, not a failed write
            raise
        raise WriteFailed(exc.errno, exc.strerror, str(lock_path(path))) from exc
    try:
        yield
    finally:
        lock.release()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path, data: bytes | str, *, mode: int = 0o644, lock: bool = True, sweep: bool = True
) -> None:
    """Replace path atomically; a failed write (ENOSPC, EROFS...) is WriteFailed naming
    path.  lock=False where the directory is not ours to leave a lock file in (the
    systemd unit directory): there the caller is the only writer.  sweep=False skips the
    search for a killed writer's temps (a glob of the whole directory) where something
    else removes them (remove_temps): a directory of thousands of files (fallback-uploads)."""
    path = Path(path)
    try:
        payload = data.encode() if isinstance(data, str) else data
        _atomic_write(path, payload, mode, lock, sweep)
    except WriteFailed:
        raise
    except OSError as exc:
        if exc.errno is None:  # a lock timeout, not a failed write
            raise
        raise WriteFailed(exc.errno, exc.strerror, str(path)) from exc


def _atomic_write(path: Path, payload: bytes, mode: int, lock: bool, sweep: bool) -> None:
    with file_lock(path) if lock else contextlib.nullcontext():
        if sweep:
            _remove_stale_temps(path)
        _replace(path, payload, mode)


def write_unique(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """atomic_write for a file no other writer names (a retention chunk, named by its id
    range): no directory lock and no sweep for stale temps, whose glob costs a scan of
    the directory per write (thousands of chunks a day).  The caller removes a killed
    writer's temps itself (remove_temps)."""
    path = Path(path)
    make_dir(path.parent)
    try:
        _replace(path, data, mode)
    except OSError as exc:
        raise WriteFailed(exc.errno, exc.strerror, str(path)) from exc


def remove_temps(directory: Path) -> None:
    """The temp files a killed write_unique left in directory (none is in flight)."""
    for stale in directory.glob(".*.tmp") if directory.is_dir() else ():
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def _replace(path: Path, payload: bytes, mode: int) -> None:
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
    leftovers = [
        *path.parent.glob(f".{glob.escape(path.name)}.*.tmp"),
        path.with_name(f".{path.name}.lock"),
    ]
    for stale in leftovers:
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def json_bytes(obj: Any) -> bytes:
    """How every JSON artifact is written (indented, sorted keys, a final newline)."""
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()


def atomic_write_json(path: Path, obj: Any, *, mode: int = 0o644, sweep: bool = True) -> None:
    atomic_write(path, json_bytes(obj), mode=mode, sweep=sweep)


# -- reading what a job did not just write ------------------------------------
#
# Every marker, checkpoint, meta file, report and the config file is read
# through read_bytes/read_text/read_json: a symlink is refused (O_NOFOLLOW: a
# planted link cannot make a job read or upload another file), a FIFO or device
# cannot block the job (O_NONBLOCK, then "regular file" is required), the size is
# capped per kind before anything is read, text is strict UTF-8 and JSON nesting
# is bounded.  Whatever is wrong becomes one error naming the file and what to do:
# BadInput (65) for data, ConfigError (78) for configuration.

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
MAX_JSON_DEPTH = 32


@dataclass(frozen=True)
class Kind:
    """What a file is, how large it may be, and what the operator should do when it is bad."""

    what: str
    max_bytes: int
    fix: str
    config: bool = False  # ConfigError (78) instead of BadInput (65)

    def error(self, path: Path | str, problem: str) -> M10Error:
        cls = ConfigError if self.config else BadInput
        return cls(f"{self.what} {path}: {problem}; {self.fix}")


CONFIG = Kind(
    "config file", 16 * MiB, "fix it or point --config/M10_CONFIG at the right file", config=True
)
ENV_FILE = Kind(
    "environment file",
    1 * MiB,
    "fix it (KEY=VALUE lines, as systemd's "
    "EnvironmentFile= reads them) or point M10_ENV_FILE at the right file",
    config=True,
)
FALLBACK_META = Kind(
    "fallback meta",
    64 * KiB,
    "fix it, or move the entry (file and sidecars) out of fallback-uploads",
)
FALLBACK_DATA = Kind(
    "fallback file",
    5 * GiB,
    "restore it, or move the entry (file and sidecars) out of fallback-uploads",
)
UPLOADED_MARKER = Kind(
    "upload marker",
    64 * KiB,
    "it is ignored and the file re-verified or re-uploaded; nothing to do unless this repeats",
)
UPLOAD_DATA = Kind("file to upload", 5 * GiB, "check what wrote it")
STATS_CSV = Kind("stats CSV", 4 * MiB, "fix or restore the file (nothing was overwritten)")
STATS_MARKER = Kind(
    "stats marker", 64 * KiB, "move it aside and rerun m10-daily-stats to rebuild it from the CSV"
)
CANARY_REPORT = Kind(
    "canary report",
    16 * MiB,
    "nothing was acted on. Rerun m10-canary to write a fresh report (or move the bad file aside)",
)
ARCHIVED = Kind(
    "file to archive",
    1 * GiB,
    "retention left it in place: replace it with a regular file or remove it",
)
RETENTION_CHUNK = Kind(
    "retention chunk",
    1 * GiB,
    "nothing was read: give the path of a regular chunk file (*.pgcopy.zst, *.csv.gz, *.jsonl.gz)",
)
METRICS = Kind("metrics file", 4 * MiB, "remove it; the next run rewrites it")

CHUNK = 1 << 20
_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_regular(path: Path | str, kind: Kind) -> tuple[int, os.stat_result]:
    """An fd on a regular file at path (never a symlink, FIFO, device or directory),
    within kind's size cap; the caller closes it.  FileNotFoundError passes through."""
    try:
        fd = os.open(path, _NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise kind.error(path, "is a symlink, refused (never followed)") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise kind.error(path, "is not readable by this user (check owner and mode)") from None
        raise kind.error(path, f"cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise kind.error(path, f"is a {_file_type(st.st_mode)}, not a regular file")
        if st.st_size > kind.max_bytes:
            raise kind.error(
                path,
                f"is {st.st_size} bytes, over the {_size(kind.max_bytes)} "
                "limit for this kind of file",
            )
        # Opened non-blocking only so a FIFO could not hang the open; reads block normally.
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def _size(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"


def read_bytes(path: Path | str, kind: Kind, *, missing_ok: bool = False) -> bytes | None:
    """The file's bytes (at most kind.max_bytes); None when absent and missing_ok."""
    try:
        fd, _ = open_regular(path, kind)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise kind.error(path, "does not exist") from None
    try:
        chunks, total = [], 0
        while chunk := os.read(fd, min(CHUNK, kind.max_bytes + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > kind.max_bytes:  # grew since fstat
                raise kind.error(
                    path, f"is over the {_size(kind.max_bytes)} limit for this kind of file"
                )
    except OSError as exc:
        raise kind.error(path, f"cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def decode(path: Path | str, kind: Kind, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise kind.error(path, f"is not UTF-8 text (bad byte at offset {exc.start})") from None


def read_text(path: Path | str, kind: Kind, *, missing_ok: bool = False) -> str | None:
    data = read_bytes(path, kind, missing_ok=missing_ok)
    return None if data is None else decode(path, kind, data)


def json_depth(text: str) -> int:
    """Deepest nesting of arrays/objects (strings skipped), without recursing."""
    depth = deepest = 0
    for m in re.finditer(r'"(?:[^"\\]|\\.)*"?|[\[{]|[\]}]', text):
        ch = m.group()
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_json(
    path: Path | str, kind: Kind, data: bytes, *, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    text = decode(path, kind, data)
    if not text.strip():
        raise kind.error(path, "is empty")
    if json_depth(text) > max_depth:
        raise kind.error(path, f"nests deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise kind.error(path, f"is not valid JSON (truncated?): {exc}") from None


def read_json(
    path: Path | str,
    kind: Kind,
    *,
    missing_ok: bool = False,
    schema: Callable[[Any], Any] | None = None,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """Parsed JSON, checked by schema (which raises ValueError saying what is wrong
    and may return a converted value); None when absent and missing_ok."""
    data = read_bytes(path, kind, missing_ok=missing_ok)
    if data is None:
        return None
    obj = parse_json(path, kind, data, max_depth=max_depth)
    if schema is None:
        return obj
    try:
        return schema(obj)
    except (ValueError, TypeError) as exc:
        raise kind.error(path, str(exc)) from None


def json_object(required: Mapping[str, type | tuple[type, ...]]) -> Callable[[Any], dict[str, Any]]:
    """A schema: a JSON object whose listed fields exist with these types (bool is not int)."""

    def check(obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
        for name, kinds in required.items():
            value = obj.get(name)
            kinds_t = kinds if isinstance(kinds, tuple) else (kinds,)
            if not isinstance(value, kinds_t) or (isinstance(value, bool) and bool not in kinds_t):
                want = "/".join(k.__name__ for k in kinds_t)
                raise ValueError(f"field {name!r} missing or not a {want} (got {value!r})")
        return obj

    return check
