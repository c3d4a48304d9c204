"""Job settings, declared once: one frozen dataclass per TOML table.

A job names its tables on its Job (`Job.settings`).  Each field is a setting:
its annotation is the type, its default the default, and `setting()` adds the
help, range, choices, an extra check and the secret flag.  `build()` checks a
table against its class -- unknown key (with a did-you-mean), wrong type, out
of range, then the class's own cross-field `problems()` ("<key>: <what>") --
and returns every problem instead of stopping at the first, so `m10 config
check` can list them all.  The example config and docs/configuration.md are
generated from the same declarations (m10jobs/configdoc.py): a setting is
added in one place.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a setting() field declares beyond its type and default."""

    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] = ()
    check: Callable[[Any], str | None] | None = None
    """Returns what was expected when the (typed) value is wrong, else None."""
    secret: bool = False
    """The value carries a secret: registered (m10jobs.redact) at config load, never
    echoed in an error, masked in `m10 config check` -- whole, or for a URL/conninfo
    its password; for a table of strings every value whole."""
    secret_env: bool = False
    """The values are names of environment variables whose values are secrets
    (rollback.pass_env): those values are registered at config load."""
    example: Any = None
    """Shown commented out in the example config where the default says too little."""
    ship: bool = False
    """Ship the example active in the example config (a starting set, not a default)."""


def setting(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[Any, ...] = (),
    check: Callable[[Any], str | None] | None = None,
    secret: bool = False,
    secret_env: bool = False,
    example: Any = None,
    ship: bool = False,
) -> Any:
    """A dataclass field carrying its Spec (dict defaults are copied per instance)."""
    meta = {"m10": Spec(help, min, max, choices, check, secret, secret_env, example, ship)}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def spec(f: dataclasses.Field[Any]) -> Spec:
    return f.metadata.get("m10") or Spec("")


@cache
def fields(cls: type) -> tuple[tuple[dataclasses.Field[Any], Any], ...]:
    """(field, resolved type) of a settings class, in declaration order."""
    hints = typing.get_type_hints(cls)
    return tuple((f, hints[f.name]) for f in dataclasses.fields(cls))


def suggest(name: str, known: list[str]) -> str:
    """ "; did you mean 'x'?" for a near miss among `known`, else ""."""
    import difflib  # only on the error path

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def got(value: Any, secret: bool = False) -> str:
    """ ", got <what>" for an error line: a scalar as written, a table by its keys and a
    list by its length -- never their values (a table may hold secrets: rollback.env)
    -- and nothing at all for a secret."""
    if secret:
        return ""
    if isinstance(value, dict):
        return f", got a table (keys: {', '.join(map(str, value)) or 'none'})"
    if isinstance(value, list):
        return f", got a list of {len(value)} item(s)"
    return f", got {value!r}"


def register_secrets(cls: type, data: Any) -> None:
    """Register (m10jobs.redact) what table `data` holds under the fields of `cls`
    declared secret (and, nested, of its tables), from the raw file: before anything
    is validated, so no error line can carry them."""
    import os

    from m10jobs import redact

    if not isinstance(data, dict):
        return
    for f, tp in fields(cls):
        value, s, inner = data.get(f.name), spec(f), _optional(tp)
        if value is None:
            continue
        if s.secret_env and isinstance(value, list):
            redact.register_env(os.environ, [v for v in value if isinstance(v, str)])
        if s.secret:
            if isinstance(value, dict):
                for v in value.values():
                    redact.register_secret(str(v))
                    redact.register_dsn(v)
            elif isinstance(value, str) and "://" not in value and "=" not in value:
                redact.register_secret(value)
            redact.register_tree(value)
        if dataclasses.is_dataclass(inner):
            register_secrets(typing.cast(type, inner), value)
        elif typing.get_origin(inner) is tuple and dataclasses.is_dataclass(
            typing.get_args(inner)[0]
        ):
            for item in value if isinstance(value, list) else ():
                register_secrets(typing.get_args(inner)[0], item)


class _Bad(Exception):
    """A value that is not what the declaration expects (the message says what is)."""


def describe(tp: Any, s: Spec) -> str:
    """What a value of this declared type must be, in an operator's words."""
    if s.choices:
        return "one of " + ", ".join(repr(c) for c in s.choices)
    tp = _optional(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return "a table"
    if origin is tuple:
        item = args[0]
        return (
            "a list of tables"
            if dataclasses.is_dataclass(item)
            else f"a list of {describe(item, Spec('')).removeprefix('a ').removeprefix('an ')}s"
        )
    if origin is not None:
        return "a table of strings" if args[1:] == (str,) else "a table"
    base = (
        'a decimal number (a string like "50.00" keeps it exact)'
        if _is_decimal(tp)
        else {
            bool: "true or false",
            int: "an integer",
            float: "a number",
            str: "a non-empty string",
        }.get(tp, "a value")
    )
    if s.min is not None and s.max is not None:
        return f"{base} between {_num(s.min)} and {_num(s.max)}"
    if s.min is not None:
        return f"{base} >= {_num(s.min)}"
    if s.max is not None:
        return f"{base} <= {_num(s.max)}"
    return base


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _is_decimal(tp: Any) -> bool:
    """tp is decimal.Decimal, without importing decimal where no setting declares one
    (--help of most jobs): a class that declares one has imported it."""
    module = sys.modules.get("decimal")
    return module is not None and tp is module.Decimal


def _optional(tp: Any) -> Any:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _convert(
    tp: Any, value: Any, s: Spec, where: str, problems: list[str], base: Any = None
) -> Any:
    tp = _optional(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Bad
        return build(typing.cast(type, tp), value, where, problems, base)
    if origin is tuple:
        if not isinstance(value, list):
            raise _Bad
        items = [
            _convert(args[0], v, Spec(""), f"{where}[{i}]", problems) for i, v in enumerate(value)
        ]
        value = tuple(items)
    elif origin is dict and args[1:] != (str,):  # a table of values (rollback.set_flags)
        if not isinstance(value, dict):
            raise _Bad
        value = dict(value)  # its values are the check's to judge
    elif origin is not None:  # a table of strings (e.g. outbox.routes)
        if not isinstance(value, dict):
            raise _Bad
        for k, v in value.items():
            if not isinstance(v, str) or not v:
                problems.append(f"{where}.{k}: expected a non-empty string{got(v, s.secret)}")
        value = {k: v for k, v in value.items() if isinstance(v, str) and v}
    elif _is_decimal(tp):
        from decimal import Decimal, InvalidOperation

        try:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise _Bad
            value = Decimal(str(value))
        except InvalidOperation:
            raise _Bad from None
        if not value.is_finite():
            raise _Bad
    elif tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        value = float(value)
        if not math.isfinite(value):  # TOML has nan and inf; no setting means them
            raise _Bad
    elif not isinstance(value, tp) or (isinstance(value, bool) and tp is not bool):
        raise _Bad
    if tp is str and value == "":
        raise _Bad
    if s.choices and value not in s.choices:
        raise _Bad
    if (s.min is not None and value < s.min) or (s.max is not None and value > s.max):
        raise _Bad
    if s.check is not None:
        expected = s.check(value)
        if expected:
            raise _Bad(expected)
    return value


def build(
    cls: type, data: Mapping[str, Any], where: str, problems: list[str], base: Any = None
) -> Any:
    """An instance of settings class `cls` from TOML table `data` (named `where`) over
    `base` (a nested table's declared default, else the class defaults); what is
    wrong goes to `problems` ("<where>.<key>: <what>") and the default stays."""
    known = {f.name: (f, tp) for f, tp in fields(cls)}
    for key in data:
        if key not in known:
            problems.append(f"{where}.{key}: unknown key{suggest(key, list(known))}")
    values: dict[str, Any] = {}
    before = len(problems)
    for name, (f, tp) in known.items():
        if name not in data:
            continue
        try:
            values[name] = _convert(
                tp,
                data[name],
                spec(f),
                f"{where}.{name}",
                problems,
                None if f.default is dataclasses.MISSING else f.default,
            )
        except _Bad as exc:
            expected = str(exc) or describe(tp, spec(f))
            problems.append(f"{where}.{name}: expected {expected}{got(data[name], spec(f).secret)}")
    obj = dataclasses.replace(base, **values) if base is not None else cls(**values)
    if len(problems) == before:
        check = getattr(obj, "problems", None)
        problems += [f"{where}.{p}" for p in (check() if check else ())]
    return obj
