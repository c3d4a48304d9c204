"""Feature flags: one JSON file in the state directory, for the platform's programs
to read and for operators and m10-rollback to switch (docs/flags.md).

`<state_dir>/flags/flags.json` holds the flags, a bounded audit trail (who, when,
why, the previous value) and the ids of the automated actions already applied.
Every change is a read-modify-write under the directory's one lock file, written
by edges/files' atomic_write (temp file, fsync, rename, fsync directory): a reader
sees the old complete file or the new one, never a torn one, and a writer killed
at any point leaves the last acknowledged state.  An action id (m10-rollback:
`rollback:<report run id>`) is recorded in the same write as its values, so
applying an action twice (a retry after a crash) changes nothing the second time.

Cheap to import (the canary settings check flag names with it): the file edge is
imported where a file is read or written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FILE = Path("flags") / "flags.json"
FORMAT = 1
AUDIT_KEEP = 500
"""Changes kept in the file's audit trail (oldest dropped first)."""
APPLIED_KEEP = 200
"""Action ids kept (a retry comes minutes after its crash, not 200 actions later)."""
MAX_BYTES = 4 << 20
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
UNSET = object()
"""The value of a change that removes the flag."""

Value = str | bool | int | float


def check_name(name: str) -> str | None:
    """What a flag name must be, when `name` is not one."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        return f"flag names of letters, digits, '_', '.', '-' (at most 100; {name!r} is not one)"
    return None


def check_value(value: Any) -> str | None:
    """What a flag value must be, when `value` is not one."""
    if isinstance(value, str | bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return None
    return f"a string, true/false or a number as each flag's value (got {type(value).__name__})"


def check_flags(flags: Mapping[str, Any]) -> str | None:
    """The check of a {name: value} table (rollback.set_flags)."""
    for name, value in flags.items():
        problem = check_name(name) or check_value(value)
        if problem:
            return problem
    return None


def path(state_dir: Path) -> Path:
    return Path(state_dir) / FILE


def parse_value(text: str) -> Value:
    """A value as typed on the command line: true/false, a number or a JSON string
    ("\\"true\\"" is the string true) are JSON; anything else is the text itself."""
    import json

    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if check_value(value) is None else text


def show(value: Any) -> str:
    """A value as `m10 flags get` prints it for scripts: a string as is, the rest JSON."""
    import json

    return value if isinstance(value, str) else json.dumps(value)


def _kind() -> Any:
    from m10jobs.edges import files

    return files.Kind(
        "flags file",
        MAX_BYTES,
        "fix it or move it aside (the audit trail in it says what the flags were)",
    )


def _schema(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict) or not isinstance(obj.get("flags"), dict):
        raise ValueError('expected a JSON object with a "flags" object')
    if obj.get("format") != FORMAT:
        raise ValueError(f"format {obj.get('format')!r} is not {FORMAT}")
    for name, value in obj["flags"].items():
        problem = check_name(name) or check_value(value)
        if problem:
            raise ValueError(f"flag {name!r}: expected {problem}")
    if not isinstance(obj.get("audit", []), list) or not isinstance(obj.get("applied", []), list):
        raise ValueError('"audit" and "applied" must be lists')
    return obj


def read(state_dir: Path) -> dict[str, Any]:
    """The whole file ({"format", "flags", "audit", "applied"}); empty when absent."""
    from m10jobs.edges import files

    found = files.read_json(path(state_dir), _kind(), missing_ok=True, schema=_schema)
    return found or {"format": FORMAT, "flags": {}, "audit": [], "applied": []}


def flags(state_dir: Path) -> dict[str, Value]:
    return dict(read(state_dir)["flags"])


@dataclass(frozen=True)
class Change:
    name: str
    value: Any  # a Value, or UNSET
    previous: Any  # a Value, or UNSET


def update(
    state_dir: Path,
    changes: Mapping[str, Any],
    *,
    who: str,
    reason: str | None,
    source: str,
    action: str | None = None,
    at: datetime | None = None,
) -> list[Change] | None:
    """Apply {name: value or UNSET} in one atomic write with its audit entries; None
    (nothing written) when `action` was applied already."""
    from m10jobs.edges import files

    target = path(state_dir)
    when = (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
    with files.file_lock(target):
        doc = read(state_dir)
        applied = list(doc.get("applied", []))
        if action is not None and action in applied:
            return None
        current: dict[str, Any] = dict(doc["flags"])
        audit = list(doc.get("audit", []))
        done: list[Change] = []
        for name, value in changes.items():
            previous = current.get(name, UNSET)
            if value is UNSET:
                current.pop(name, None)
            else:
                current[name] = value
            done.append(Change(name, value, previous))
            entry: dict[str, Any] = {
                "at": when,
                "who": who,
                "source": source,
                "flag": name,
                "action": "unset" if value is UNSET else "set",
                "reason": reason,
            }
            if value is not UNSET:
                entry["value"] = value
            if previous is not UNSET:
                entry["previous"] = previous
            audit.append(entry)
        if action is not None:
            applied.append(action)
        files.atomic_write_json(
            target,
            {
                "format": FORMAT,
                "flags": current,
                "audit": audit[-AUDIT_KEEP:],
                "applied": applied[-APPLIED_KEEP:],
            },
        )
    return done
