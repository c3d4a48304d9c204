"""Exit codes (sysexits; docs/contract.md, "Exit codes") and the errors that carry them.

Every failure an operator can act on is an M10Error whose message says what
failed and what to do; the runner prints it as one line and exits with its code.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    DATAERR = 65
    UNAVAILABLE = 69
    TEMPFAIL = 75
    CONFIG = 78


MEANINGS: dict[int, str] = {
    ExitCode.OK: "pass done, or nothing to do",
    ExitCode.FAILED: "the pass ran and something failed, or its lease was lost",
    ExitCode.USAGE: "usage error",
    ExitCode.DATAERR: "bad input data: nothing acted on",
    ExitCode.UNAVAILABLE: "PostgreSQL, Redis or object storage unreachable",
    ExitCode.TEMPFAIL: "lock held by another holder: skipped, nothing done",
    ExitCode.CONFIG: "bad or missing configuration",
}


def exit_meaning(code: int) -> str:
    """The README's one-line meaning of an exit code (a negative code: killed by a signal)."""
    if code < 0:
        return f"killed by signal {-code}"
    return MEANINGS.get(code, "not an m10jobs exit code")


class M10Error(Exception):
    """An expected failure: one clear line, a documented exit code, no traceback."""

    exit_code: ExitCode = ExitCode.FAILED


class ConfigError(M10Error):
    exit_code = ExitCode.CONFIG


class BadInput(M10Error):
    """Corrupt checkpoint, report or marker: nothing was acted on."""

    exit_code = ExitCode.DATAERR


class DependencyUnavailable(M10Error):
    """PostgreSQL, Redis or object storage cannot be reached."""

    exit_code = ExitCode.UNAVAILABLE


class LeaseLost(M10Error):
    """The pass's lease lapsed or was taken over; its work was not committed."""

    exit_code = ExitCode.FAILED


class LockBusy(M10Error):
    """Another holder's lease is live: skipped, nothing done (exit 75).  `holder`: the
    lock_holder row (holder_id, fencing_token, age_s, expires_in_s), or None."""

    exit_code = ExitCode.TEMPFAIL

    def __init__(self, name: str, holder: dict[str, Any] | None) -> None:
        self.name, self.holder = name, holder or {}
        if holder and holder["expires_in_s"] <= 0:
            detail = (
                f"held by {holder['holder_id']} (token {holder['fencing_token']}), whose "
                f"lease lapsed {-holder['expires_in_s']:.1f}s ago but whose fenced commit "
                "is still open (PostgreSQL ends it if it idles)"
            )
        elif holder:
            detail = (
                f"held by {holder['holder_id']} (token {holder['fencing_token']}) for "
                f"{holder['age_s']:.1f}s, expires in {holder['expires_in_s']:.1f}s"
            )
        else:
            detail = "taken by another holder a moment ago"
        super().__init__(f"lock {name} is {detail}; skipped, nothing done")


class TaskFailed(M10Error):
    """A pass ran and something in it failed (details already logged).  summary: what
    the pass did get done, kept in the run's JSON summary."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, summary: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.summary = summary or {}


def some_refused(
    what: str, summary: dict[str, Any], *, others: str | None, nothing: str
) -> M10Error:
    """Entries refused and skipped, each on its own (a fallback entry, a stats month, a
    cost period): 1 with `others` (what the valid ones got) when any were acted on, else
    bad input (65) with `nothing`, since the bad ones were all there was."""
    if others is None:
        return BadInput(f"{what}; {nothing}")
    return TaskFailed(f"{what}; {others}", summary)


def combine_exit_codes(codes: list[int]) -> int:
    """One exit code for a run of one or more tasks.

    All skipped (lock held elsewhere) -> 75; none failed -> 0; failures that
    agree on a code (say every one was 69) -> that code; mixed failures -> 1.
    A single-task job therefore exits with its task's own code.
    """
    if not codes:
        return ExitCode.OK
    if all(c == ExitCode.TEMPFAIL for c in codes):
        return ExitCode.TEMPFAIL
    failures = {c for c in codes if c not in (ExitCode.OK, ExitCode.TEMPFAIL)}
    if not failures:
        return ExitCode.OK
    return failures.pop() if len(failures) == 1 else ExitCode.FAILED


class WriteFailed(M10Error, OSError):
    """Writing a file failed (disk full, read-only, quota): the message names the file.

    Still an OSError, so callers that tolerate a failed write keep doing so."""

    exit_code = ExitCode.FAILED

    def __str__(self) -> str:
        import errno

        if self.errno in (errno.EACCES, errno.EPERM):
            fix = "give the jobs' user (m10jobs) write access to that directory, then rerun"
        elif self.errno == errno.EROFS:
            fix = "remount that filesystem read-write (or point the setting elsewhere), then rerun"
        else:
            fix = "free space on (or fix) that filesystem, then rerun"
        return f"cannot write {self.filename}: {self.strerror}; {fix}"
