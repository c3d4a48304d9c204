"""Running a job as `nobody` from any checkout: a clone in a private directory (mode 0700:
root's home, `mktemp -d`) keeps `nobody` out of .venv/bin, so such runs start from a
traversable copy of the venv (the `nobody_bin` fixture in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import m10jobs

BIN = Path(sys.executable).parent  # as tests/conftest.py's


def setpriv_nobody() -> list[str]:
    nobody = pwd.getpwnam("nobody")
    return ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]


def as_nobody(base: Path) -> list[str]:
    nobody = pwd.getpwnam("nobody")
    for dirpath, dirnames, filenames in os.walk(base):
        for name in [".", *dirnames, *filenames]:
            os.lchown(Path(dirpath) / name, nobody.pw_uid, nobody.pw_gid)
    return setpriv_nobody()


def nobody_cannot_run(bin_dir: Path) -> str | None:
    """Why `nobody` cannot start a job from bin_dir (None: it can)."""
    proc = subprocess.run(
        [*setpriv_nobody(), str(bin_dir / "m10-daily-stats"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    if proc.returncode == 0:
        return None
    return (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]


def _readable_copy(src: str, dst: str) -> None:
    """Hard-link a world-readable file (cheap); copy anything else, made readable."""
    mode = os.stat(src).st_mode
    if mode & 0o004:
        with contextlib.suppress(OSError):  # another filesystem: copy
            os.link(src, dst)
            return
    shutil.copy2(src, dst)
    os.chmod(dst, stat.S_IMODE(mode) | 0o444 | (0o111 if mode & 0o100 else 0))


def traversable_venv(base: Path) -> Path:
    """A venv under base that `nobody` can run the console scripts from.

    A new venv on the same base interpreter; our site-packages linked into it (the
    editable install's path, which points into the checkout, left out) and the
    m10jobs package copied in its place (sql/ resolved); each console script of
    m10jobs rewritten to start the new venv's python."""
    venv = base / "venv"
    python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    ours = Path(sysconfig.get_paths()["purelib"])
    site = venv / ours.relative_to(sys.prefix)
    shutil.copytree(
        ours,
        site,
        symlinks=False,
        dirs_exist_ok=True,
        copy_function=_readable_copy,
        ignore=shutil.ignore_patterns("__editable__*", "_editable_impl_*"),
    )
    package = Path(m10jobs.__file__).resolve().parent
    shutil.copytree(package, site / "m10jobs", symlinks=False, copy_function=_readable_copy)
    for dirpath, _, _ in os.walk(base):
        os.chmod(dirpath, 0o755)
    for ep in importlib.metadata.distribution("m10jobs").entry_points:
        if ep.group != "console_scripts":
            continue
        text = (BIN / ep.name).read_text()
        script = venv / "bin" / ep.name
        script.write_text(f"#!{venv}/bin/python\n" + text.split("\n", 1)[1])
        script.chmod(0o755)
    return venv / "bin"
