"""Command-line surface: job commands generated from the registry, and `m10`."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def _with_usage(ctx: click.Context, exc: click.UsageError) -> click.UsageError:
    """click's parser raises some usage errors (an option missing its value) without a
    context, and then prints no usage line: give them the command's."""
    if exc.ctx is None:
        exc.ctx = ctx  # show() reads only ctx (cmd is Final in click)
    return exc


class Command(click.Command):
    """Every m10jobs command: a usage error always shows the usage line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _with_usage(ctx, exc) from None


class Group(click.Group):
    """Every m10jobs group: as Command, and so are the commands and groups declared in it."""

    command_class = Command
    group_class = type  # subgroups are of this same class

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _with_usage(ctx, exc) from None


def version_option() -> Callable[[F], F]:
    """`--version` for every script, defined once: the release and the schema range it
    runs on (m10jobs.release, read only when asked, so it costs nothing at start-up)."""

    def show(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if not value or ctx.resilient_parsing:
            return
        from m10jobs.release import version_line

        click.echo(version_line(ctx.find_root().info_name or "m10"))
        ctx.exit()

    return click.option(
        "--version",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=show,
        help="Show the release and the database schema range it runs on, and exit.",
    )


def die_of_closed_pipe() -> NoReturn:
    """The reader of stdout went away (`m10 locks list | head`): end silently by SIGPIPE,
    as git and the classic tools do, instead of reporting a failure of the command.
    stdout is pointed at /dev/null first, so no later flush can complain about the pipe."""
    from m10jobs import stopping

    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    stopping.die_by(signal.SIGPIPE)
    raise SystemExit(128 + signal.SIGPIPE)  # pragma: no cover (already dead)


@contextlib.contextmanager
def quiet_on_closed_pipe() -> Iterator[None]:
    """Around a command's output: a closed stdout ends the process by SIGPIPE (see above),
    including output still buffered when the command returns."""
    try:
        try:
            yield
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        die_of_closed_pipe()
