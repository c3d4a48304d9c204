"""Command-line surface: job commands generated from the registry, and `m10`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def version_option() -> Callable[[F], F]:
    """`--version` for every script, defined once: the installed m10jobs version (read
    from package metadata only when asked, so it costs nothing at start-up)."""
    return click.version_option(package_name="m10jobs", message="%(prog)s (m10jobs) %(version)s")
