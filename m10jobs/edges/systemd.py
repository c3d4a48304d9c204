"""systemd, read through `systemctl` (`m10 status`): each service's last exit and each
timer's next elapse.  Every call is bounded (SYSTEMCTL_TIMEOUT_S) and answers empty
where systemd does not run or does not answer, so a status screen never hangs on it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

SYSTEMCTL_TIMEOUT_S = 3.0


def present() -> bool:
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


SERVICE_PROPS = ("Id", "ExecMainStatus", "ExecMainExitTimestamp")
"""Of each service; `--timestamp=unix` formats the timestamp as @seconds (systemd >= 251)."""


def parse_systemctl_show(text: str) -> dict[str, dict[str, str]]:
    """`systemctl show -p ... UNIT...` output (blocks separated by blank lines) by unit Id."""
    units: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n\s*\n", text.strip()):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if props.get("Id"):
            units[props["Id"]] = props
    return units


def timestamp(value: str | None) -> float | None:
    """`@1764419700` (--timestamp=unix) as seconds; empty/0/unparsable: None."""
    if value and value.startswith("@"):
        try:
            ts = float(value[1:])
        except ValueError:
            return None
        return ts or None
    return None


def _systemctl(*args: str) -> str:
    try:
        return subprocess.run(
            ["systemctl", "--no-pager", *args],
            capture_output=True,
            text=True,
            timeout=SYSTEMCTL_TIMEOUT_S,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def services(names: Sequence[str]) -> dict[str, dict[str, str]]:
    """Last exit status and time of each service, by unit name ({} without systemd)."""
    if not names or not present():
        return {}
    return parse_systemctl_show(
        _systemctl("show", "--timestamp=unix", *(f"-p{p}" for p in SERVICE_PROPS), "--", *names)
    )


def parse_list_timers(text: str) -> dict[str, float | None]:
    """`systemctl list-timers --output=json`: next elapse (Unix seconds) by timer unit.
    (NextElapseUSecRealtime in `systemctl show` ignores --timestamp before systemd 258.)"""
    try:
        timers = json.loads(text or "[]")
    except ValueError:
        return {}
    return {
        t["unit"]: (t["next"] / 1e6 if t.get("next") else None)
        for t in timers
        if isinstance(t, dict) and "unit" in t
    }


def timers(patterns: Sequence[str]) -> dict[str, float | None]:
    """Next elapse of each timer, by unit name ({} without systemd)."""
    if not present():
        return {}
    return parse_list_timers(_systemctl("list-timers", "--all", "--output=json", "--", *patterns))
