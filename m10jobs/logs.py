"""One JSON object per line on stderr, carrying job, run_id, lock, fencing_token; plain
text lines instead on a terminal or with --log-format text / M10_LOG_FORMAT=text.

The run context is a plain dict that the runner updates as the lease is taken
and released; a filter stamps it on every record.  Whole lines go through
redact(), so nothing secret escapes in messages or tracebacks: a JSON line's
fields (message, traceback, extras) before they are encoded -- the mask never
breaks the JSON, and a secret JSON would escape is still found -- a text line whole.
When stderr is the journal, each line starts with its syslog priority (`<3>`),
which journald strips and honours: `journalctl -p err` shows the job's own
reason, and the message itself stays one JSON object.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from pythonjsonlogger.json import JsonEncoder, JsonFormatter

from m10jobs.redact import redact, redact_obj

LOGGER_NAME = "m10jobs"
_context: dict[str, Any] = {}


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class _RedactingEncoder(JsonEncoder):
    """What the encoder makes of a non-JSON value (a path, a date) is redacted too."""

    def default(self, o: Any) -> Any:
        return redact_obj(super().default(o))


class _RedactingJsonFormatter(JsonFormatter):
    def __init__(self, verbose: bool) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(message)s",
            rename_fields={"levelname": "level", "asctime": "time"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
            json_encoder=_RedactingEncoder,
        )
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        if not self.verbose:
            record.exc_info = None
            record.exc_text = None
        return super().format(record)

    def process_log_record(self, log_data: Any) -> Any:
        return redact_obj(log_data)


class _RedactingTextFormatter(logging.Formatter):
    """Text lines (a terminal, --log-format text): for an operator reading during recovery."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={getattr(record, k)}"
            for k in ("lock", "fencing_token")
            if getattr(record, k, None) is not None
        )
        line = f"{record.levelname.lower()}: {record.getMessage()}" + (
            f" [{extras}]" if extras else ""
        )
        if record.exc_info and self.verbose:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class _JournalPriorityFormatter(logging.Formatter):
    """Prefix every line with `<N>` (sd-daemon(3)); journald reads the prefix when
    SyslogLevelPrefix= is on, its default."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_SYSLOG_PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def stderr_is_journal() -> bool:
    """True when systemd connected stderr to the journal: JOURNAL_STREAM names the
    device and inode of that very stream (systemd.exec(5)), not merely inherited."""
    try:
        dev, ino = (int(part) for part in os.environ["JOURNAL_STREAM"].split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (KeyError, ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def new_run_id() -> str:
    """12 hex digits naming one run in every log line, summary and holder id.
    (os.urandom, not secrets: it is an identifier, and secrets costs start-up time.)"""
    return os.urandom(6).hex()


def log_format(given: str | None = None) -> str:
    """--log-format, else M10_LOG_FORMAT, else text on a terminal and JSON otherwise (the
    journal, a pipe, a file).  A bad value logs JSON; the config load then refuses it (78)."""
    fmt = given or os.environ.get("M10_LOG_FORMAT")
    if not fmt:
        try:
            fmt = "text" if sys.stderr.isatty() else "json"
        except (AttributeError, ValueError):  # stderr closed or replaced
            fmt = "json"
    return fmt if fmt in ("json", "text") else "json"


def setup_logging(
    job: str, run_id: str, *, verbose: bool = False, fmt: str | None = None
) -> logging.Logger:
    _context.clear()
    _context.update(job=job, run_id=run_id)
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.filters.clear()
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter
    if log_format(fmt) == "text":
        formatter = _RedactingTextFormatter(verbose)
    else:
        formatter = _RedactingJsonFormatter(verbose)
    if stderr_is_journal():
        formatter = _JournalPriorityFormatter(formatter)
    handler.setFormatter(formatter)
    handler.addFilter(_ContextFilter())
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    return logger


def set_context(**fields: Any) -> None:
    """Stamp (or with None, remove) fields on every later record."""
    for key, value in fields.items():
        if value is None:
            _context.pop(key, None)
        else:
            _context[key] = value
