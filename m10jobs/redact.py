"""Keep secrets out of every line m10jobs writes.

Applied to whole formatted log lines (messages, tracebacks, driver errors), so
a password embedded in a DSN that psycopg echoes back never reaches the journal.
"""

from __future__ import annotations

import re
from functools import cache

MASK = "***"


@cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Compiled on first use: --help never writes a line that needs them."""
    # The password runs to the authority's LAST '@' (an unencoded '@' in it must not
    # leave its tail behind).
    uri_password = re.compile(
        r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s\"']*:)"
        r"[^\s\"'/?#]*(?=@[^@\s\"'/?#]*(?:[/?#\s\"']|$))"
    )
    kv_secret = re.compile(
        r"(?P<head>\b(?:password|passwd|secret|secret_access_key|aws_secret_access_key|token)"
        r"[\"']?\s*[=:]\s*)(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s,;&\"']+)",
        re.IGNORECASE,
    )
    return uri_password, kv_secret


_known: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask this exact value wherever it appears (config passwords, keys)."""
    if value and len(value) >= 4:
        _known.add(value)


def redact(text: str) -> str:
    uri_password, kv_secret = _patterns()
    text = uri_password.sub(lambda m: m.group("head") + MASK, text)
    text = kv_secret.sub(lambda m: m.group("head") + MASK, text)
    for secret in sorted(_known, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
