"""The one text table of the `m10` commands: a header row and data rows, each column as
wide as its widest cell, two spaces between columns, no trailing blanks."""

from __future__ import annotations

from collections.abc import Sequence


def table(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Aligned lines of `rows` (the first is the header), each prefixed by `indent`."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
