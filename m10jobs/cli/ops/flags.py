"""`m10 flags`: the feature flags file (m10jobs.flags, docs/flags.md).

`get` is for scripts: the value alone on stdout, exit 0; an unknown flag exits 1
(NOT_FOUND) unless --default gives the value to print.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import click

from m10jobs.cli import Group
from m10jobs.cli.adminkit import CONTEXT, admin_command, operator

NOT_FOUND = 1


@click.group("flags", cls=Group, context_settings=CONTEXT)
def COMMAND() -> None:
    """Feature flags in <state_dir>/flags/flags.json (docs/flags.md).

    \b
    Examples:
      m10 flags list
      m10 flags get new-checkout --default false
      m10 flags set new-checkout false --reason "incident 42"
      m10 flags unset new-checkout --reason "feature shipped"
      m10 flags audit new-checkout
    """


def _name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from m10jobs.flags import check_name

    problem = check_name(value)
    if problem:
        raise click.BadParameter(f"expected {problem}")
    return value


@admin_command(COMMAND, "list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object {name: value}.")
def list_flags(config: Any, log: logging.Logger, as_json: bool) -> int:
    """Every flag and its value, by name."""
    from m10jobs import flags

    found = flags.flags(config.state_dir)
    if as_json:
        click.echo(json.dumps(found, indent=2, sort_keys=True))
    elif not found:
        click.echo(f"no flags set ({flags.path(config.state_dir)})")
    for name in sorted(found) if not as_json else ():
        click.echo(f"{name}\t{json.dumps(found[name])}")
    return 0


@admin_command(COMMAND, "get")
@click.argument("name", callback=_name)
@click.option("--default", "default", metavar="VALUE", help="Printed (exit 0) when not set.")
@click.option("--json", "as_json", is_flag=True, help="The value as JSON (a string quoted).")
def get(config: Any, log: logging.Logger, name: str, default: str | None, as_json: bool) -> int:
    """Print NAME's value (a string as is, else JSON): exit 0; not set: exit 1, or
    print --default and exit 0."""
    from m10jobs import flags

    found = flags.flags(config.state_dir)
    if name in found:
        value = found[name]
    elif default is not None:
        value = flags.parse_value(default)
    else:
        log.error("flag %s is not set (in %s); pass --default", name, flags.path(config.state_dir))
        return NOT_FOUND
    click.echo(json.dumps(value) if as_json else flags.show(value))
    return 0


def _change(config: Any, log: logging.Logger, name: str, value: Any, reason: str | None) -> int:
    from m10jobs import flags

    who = operator()
    done = flags.update(config.state_dir, {name: value}, who=who, reason=reason, source="m10 flags")
    assert done is not None
    previous = done[0].previous
    was = "unset" if previous is flags.UNSET else json.dumps(previous)
    now = "unset" if value is flags.UNSET else json.dumps(value)
    log.info("flag %s: %s -> %s (by %s)", name, was, now, who)
    click.echo(f"{name}: {was} -> {now}")
    return 0


REASON = click.option("--reason", metavar="TEXT", help="Why, for the audit trail.")


@admin_command(COMMAND, "set")
@click.argument("name", callback=_name)
@click.argument("value")
@REASON
def set_flag(config: Any, log: logging.Logger, name: str, value: str, reason: str | None) -> int:
    """Set NAME to VALUE: true/false, a number or a JSON string are JSON, anything
    else the text itself ('"true"' is the string true)."""
    from m10jobs import flags

    return _change(config, log, name, flags.parse_value(value), reason)


@admin_command(COMMAND, "unset")
@click.argument("name", callback=_name)
@REASON
def unset(config: Any, log: logging.Logger, name: str, reason: str | None) -> int:
    """Remove NAME (readers fall back to their own default)."""
    from m10jobs import flags

    return _change(config, log, name, flags.UNSET, reason)


@admin_command(COMMAND, "audit")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="The entries as a JSON list.")
def audit(config: Any, log: logging.Logger, name: str | None, as_json: bool) -> int:
    """The kept changes (oldest first), of NAME or of every flag."""
    from m10jobs import flags

    entries = [
        e for e in flags.read(config.state_dir).get("audit", []) if name in (None, e.get("flag"))
    ]
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return 0
    for e in entries:
        value = json.dumps(e["value"]) if "value" in e else "unset"
        previous = json.dumps(e["previous"]) if "previous" in e else "unset"
        why = f" ({e['reason']})" if e.get("reason") else ""
        click.echo(
            f"{e.get('at')} {e.get('who')} [{e.get('source')}] {e.get('flag')}: "
            f"{previous} -> {value}{why}"
        )
    return 0
