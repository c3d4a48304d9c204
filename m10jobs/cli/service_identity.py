"""Hand runs behave like the units: the units' environment file and service user.

An operator recovering at 3 a.m. runs `m10 run canary` as root.  Run as root,
the job would leave root-owned files in /var/lib/m10jobs and /var/log/m10 that
the next timer run (as `m10jobs`) cannot replace, and it would not see the
secrets the units get from /etc/m10jobs/env.  So, when started as root outside
systemd on a host where the service user exists, a command first loads that
file (values already in the environment win: they are the operator's flags)
and then becomes the service user, with the units' umask.

M10_ENV_FILE and M10_SERVICE_USER (empty: stay root) override the defaults.
"""

from __future__ import annotations

import os
import pwd
import sys
from pathlib import Path

ENV_FILE = "/etc/m10jobs/env"
SERVICE_USER = "m10jobs"
UNIT_UMASK = 0o027
# What the units' StateDirectory=/LogsDirectory= create before a job starts.
UNIT_DIRECTORIES = {"M10_STATE_DIR": "/var/lib/m10jobs", "M10_LOG_DIR": "/var/log/m10"}


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (comments, blank
    lines, optional quotes, `export ` tolerated)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def load_env_file(path: str) -> None:
    """Absent: nothing to load (a checkout).  Anything but a small regular UTF-8 file
    (a symlink, FIFO, directory, garbage bytes) is refused with 78 before root reads it."""
    from m10jobs.edges import files
    from m10jobs.errors import M10Error

    try:
        text = files.read_text(path, files.ENV_FILE, missing_ok=True)
    except M10Error as exc:  # before logging is set up: one line, the documented code
        sys.stderr.write(f"m10: {exc}\n")
        raise SystemExit(int(exc.exit_code)) from None
    if text is None:
        return
    for key, value in parse_env_file(text).items():
        os.environ.setdefault(key, value)


def _prepare_directories(user: pwd.struct_passwd) -> None:
    """Create the state/log directories the way the units would, so the first hand
    run on a fresh host does not fail where a timer run would succeed."""
    for var, default in UNIT_DIRECTORIES.items():
        directory = Path(os.environ.get(var, default))
        if not directory.exists():
            directory.mkdir(mode=0o750, parents=True)
            os.chown(directory, user.pw_uid, user.pw_gid)


def adopt(*, drop: bool = True) -> None:
    """Load the units' environment and, with drop, become the service user.

    A no-op unless we are root and systemd did not start us (a unit already sets
    User= and EnvironmentFile=; INVOCATION_ID marks every process it starts).
    """
    if os.geteuid() != 0 or os.environ.get("INVOCATION_ID"):
        return
    load_env_file(os.environ.get("M10_ENV_FILE", ENV_FILE))
    name = os.environ.get("M10_SERVICE_USER", SERVICE_USER)
    if not drop or not name:
        return
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        return  # not an installed host (a checkout, the tests): stay who we are
    _prepare_directories(user)
    os.initgroups(name, user.pw_gid)
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    os.umask(UNIT_UMASK)
    os.environ.update(HOME=user.pw_dir, USER=name, LOGNAME=name)
