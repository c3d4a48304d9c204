"""Shared contract for `m10` subcommands: --config/--verbose/--database-url, JSON
logs, one clear line and a sysexits code on failure.  Used by admin.py and by
every m10jobs/cli/ops/<area>.py module.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from m10jobs.cli import Command
from m10jobs.errors import M10Error

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def admin_command(
    group: click.Group | None, name: str, *, check_schema: bool = True, **kwargs: Any
) -> Callable[..., Any]:
    """Make fn(config, log, **params) -> exit code a command with the shared contract,
    registered under group (or standalone when group is None).

    Its first database connection checks that this release fits the schema (78 with
    the fix otherwise, before the command does anything: m10jobs.release); only commands
    that look at the schema itself (`m10 db migrate`, `m10 db status`) say
    check_schema=False."""

    def decorate(fn: Callable[..., int | None]) -> click.Command:
        @click.option("--config", "config_file", metavar="PATH", help="TOML config file.")
        @click.option("--database-url", metavar="VALUE", help="libpq URI (env M10_DATABASE_URL).")
        @click.option("--verbose", "-v", is_flag=True, help="Debug logs and tracebacks.")
        @click.option(
            "--log-format",
            metavar="VALUE",
            help="Log lines: json or text (env M10_LOG_FORMAT; default: text on a terminal).",
        )
        @functools.wraps(fn)
        def wrapper(
            config_file: str | None,
            database_url: str | None,
            verbose: bool,
            log_format: str | None,
            **params: Any,
        ) -> None:
            from m10jobs.config import load_config
            from m10jobs.logs import new_run_id, setup_logging

            label = " ".join(["m10", *([group.name] if group and group.name else []), name])
            log = setup_logging(label, new_run_id(), verbose=verbose, fmt=log_format)
            config = None
            try:
                flags = {"database_url": database_url, "log_format": log_format}
                config = load_config(config_file, flags)
                if check_schema:
                    from m10jobs import release

                    release.check_schema_on_connect()
                code = fn(config, log, **params) or 0
            except (click.ClickException, BrokenPipeError):
                raise  # usage: click's own form; a closed stdout: quiet_on_closed_pipe
            except M10Error as exc:
                log.error("%s", exc)
                code = exc.exit_code
            except Exception as exc:
                from m10jobs.runner import report_failure

                code, _ = report_failure(
                    exc, config.database_url if config else None, log, verbose, what=label
                )
            click.get_current_context().exit(int(code))

        kwargs.setdefault("context_settings", CONTEXT)
        kwargs.setdefault("cls", Command)
        if group is None:
            return click.command(name, **kwargs)(wrapper)
        return group.command(name, **kwargs)(wrapper)

    return decorate


def _invoker() -> str:
    import getpass
    import os

    return os.environ.get("SUDO_USER") or getpass.getuser()


# Read when the CLI is loaded, before `m10` run as root becomes the service user
# (service_identity.adopt rewrites USER/LOGNAME): the record names the human, not m10jobs.
INVOKER = _invoker()


def operator() -> str:
    """Who runs an admin command, for the record: the user behind sudo, else the OS user
    who started `m10`, at this host."""
    import socket

    return f"{INVOKER}@{socket.gethostname()}"
