"""`m10 config`: check a config file against every job's declared settings, and
render the example config and docs/configuration.md from those declarations."""

from __future__ import annotations

import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click

from m10jobs.cli import Group
from m10jobs.cli.adminkit import CONTEXT
from m10jobs.config import SETTINGS
from m10jobs.errors import ExitCode, M10Error


@click.group(cls=Group, context_settings=CONTEXT)
def config() -> None:
    """Configuration: validate a file, render the example and the reference."""


def _setting_flags(fn: Any) -> Any:
    for s in reversed(SETTINGS):
        if s.flag:
            fn = click.option(s.option, s.key, metavar="VALUE", help=f"{s.help} (env {s.env}).")(fn)
    return fn


@config.command("check", context_settings=CONTEXT)
@click.option(
    "--config",
    "config_file",
    metavar="PATH",
    help="TOML config file (default: $M10_CONFIG, else /etc/m10jobs/m10jobs.toml).",
)
@_setting_flags
def check(config_file: str | None, **flags: Any) -> None:
    """Validate the file against every job's declared settings; print the effective
    configuration with each value's origin (flag, env, file, default), secrets
    redacted.  Exit 0 when all is well, 78 with one line per problem otherwise.

    \b
    Example:
      m10 config check --config /etc/m10jobs/m10jobs.toml
    """
    from m10jobs.config import load_config
    from m10jobs.redact import redact
    from m10jobs.registry import sections

    try:
        cfg = load_config(config_file, flags, strict=False)
    except M10Error as exc:  # no file to check: missing, unreadable, not TOML
        click.echo(redact(f"error: {exc}"), err=True)
        click.get_current_context().exit(exc.exit_code)
    problems = cfg.problems(sections())
    click.echo(f"# effective configuration; file: {cfg.source}")
    for s in SETTINGS:
        value = cfg.values[s.key]
        shown = "(unset)" if value is None else _toml(value, s.secret)
        click.echo(redact(_aligned(f"{s.key} = {shown}", _origin(s, cfg.origins[s.key]))))
    for name, cls in sections().items():
        data = cfg.file.get(name)
        data = data if isinstance(data, dict) else {}
        click.echo(f"\n[{name}]")
        for line in _effective(name, cls, data):
            click.echo(redact(line))
    for p in problems:
        click.echo(redact(f"error: {p}"), err=True)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {cfg.source}", err=True)
    click.get_current_context().exit(ExitCode.CONFIG if problems else ExitCode.OK)


def _origin(s: Any, origin: str) -> str:
    return {"flag": f"flag {s.option}", "env": f"env {s.env}", "file": "file"}.get(origin, origin)


def _aligned(text: str, comment: str) -> str:
    return f"{text:<47} # {comment}"


def _toml(value: Any, secret: bool) -> str:
    """A value as TOML; a secret one masked (a URL/conninfo keeps all but its password)."""
    from m10jobs.configdoc import toml
    from m10jobs.redact import MASK, redact

    if not secret:
        return toml(value)
    text = str(value)
    return toml(redact(text) if "://" in text or "=" in text else MASK)


def _effective(name: str, cls: type, data: Mapping[str, Any], base: Any = None) -> Iterator[str]:
    """The table's lines with origins; a rejected value shows the default used instead."""
    from m10jobs.configdoc import kind as kind_of
    from m10jobs.settings import build, fields, spec

    problems: list[str] = []
    obj = build(cls, data, name, problems, base)
    rejected = {p.split(":")[0].removeprefix(name + ".") for p in problems}
    nested: list[tuple[str, Any, Any]] = []
    for f, tp in fields(cls):
        value, kind = getattr(obj, f.name), kind_of(tp)
        if kind != "value":
            nested.append((f.name, tp, value))
            continue
        origin = "file" if f.name in data else "default"
        if f.name in rejected:
            origin = "default (the file's value is rejected)"
        shown = "(unset)" if value is None else _toml(value, spec(f).secret)
        if value is None and origin == "default":
            continue
        yield _aligned(f"{f.name} = {shown}", origin)
    for key, tp, value in nested:
        full, raw = f"{name}.{key}", data.get(key)
        kind = kind_of(tp)
        if kind == "map":
            secret = spec(next(f for f, _ in fields(cls) if f.name == key)).secret
            yield f"[{full}]" + ("" if value else "  # (none)")
            yield from (_aligned(f'"{k}" = {_toml(v, secret)}', "file") for k, v in value.items())
        elif kind == "table":
            yield f"[{full}]"
            yield from _effective(
                full,
                typing.cast(type, tp),
                raw if isinstance(raw, dict) else {},
                getattr(cls(), key),
            )
        else:
            item = typing.get_args(tp)[0]
            items = raw if isinstance(raw, list) else []
            if not value:
                yield f"# [[{full}]]: none"
            for raw_entry in items[: len(value)]:
                yield f"[[{full}]]"
                yield from _effective(full, item, raw_entry if isinstance(raw_entry, dict) else {})


@config.command("render", context_settings=CONTEXT)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    metavar="DIR",
    help="Checkout to write into (default: the one this package runs from).",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when a file is stale.")
def render(output: Path | None, check: bool) -> None:
    """Write systemd/m10jobs.toml.example and docs/configuration.md from the settings
    declarations (CI runs --check, like `m10 units render --check`).

    \b
    Example:
      m10 config render --check
    """
    from m10jobs.configdoc import ROOT, rendered

    root = output or ROOT
    stale = [
        p
        for p, text in rendered().items()
        if not (root / p).is_file() or (root / p).read_text() != text
    ]
    if check:
        for p in stale:
            click.echo(f"stale: {root / p}")
        if stale:
            click.echo("run `m10 config render` and commit the result", err=True)
        click.get_current_context().exit(ExitCode.FAILED if stale else ExitCode.OK)
    for p, text in rendered().items():
        if p in stale:
            (root / p).parent.mkdir(parents=True, exist_ok=True)
            (root / p).write_text(text)
    click.echo(
        f"{len(stale)} file(s) updated in {root}" if stale else "configuration files are current"
    )


COMMAND = config
