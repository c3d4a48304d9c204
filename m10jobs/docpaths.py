"""Where the operator docs are on this machine, for the lines that point at them.

`make install` copies docs/*.md into $(PREFIX)/share/doc/m10jobs (the Makefile's
DOCDIR), and PREFIX is the venv the scripts run from (sys.prefix): an installed host
has no checkout, so a `docs/runbook.md` in `m10 status` would name nothing there.
"""

from __future__ import annotations

DOC_SUBDIR = ("share", "doc", "m10jobs")


def doc_path(name: str) -> str:
    """The installed copy of docs/<name> if there is one, else the checkout's; a bare
    `docs/<name>` only when neither exists (a wheel installed some other way)."""
    import sys
    from pathlib import Path

    installed = Path(sys.prefix, *DOC_SUBDIR, name)
    if installed.is_file():
        return str(installed)
    checkout = Path(__file__).resolve().parents[1] / "docs" / name
    if checkout.is_file():
        return str(checkout)
    return f"docs/{name}"
