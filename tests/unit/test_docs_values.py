"""Every default, lease and schedule the hand-written docs state is the declared one.

docs/configuration.md and the example config are generated; the prose pages copy some
values by hand so that they read well.  This test reads those copies back and compares
them with the declarations (settings classes, SETTINGS, the registry's jobs): values,
not only validity.  What it reads:

- ```toml blocks: every `key = value` line states a default unless its comment calls it
  an example (`e.g.`, `example`) or states the default itself (`(default X)`, checked);
  a `# key = value` comment on a table header states that table's default; array
  tables and maps hold examples only;
- Markdown tables with a `default` column, rows keyed by `` `[section] key` ``,
  `` `section.key` ``, a global key or its `M10_` variable;
- prose: `` `section.key` (N s) ``, `` `key` (default N`` and `` `M10_X` (`value`) ``;
- tables whose first column is `script`: each job's leases and (README) schedule.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest

from m10jobs.config import SETTINGS
from m10jobs.configdoc import kind
from m10jobs.registry import HOST_PLACEHOLDER, Job, jobs, sections
from m10jobs.settings import fields

ROOT = Path(__file__).resolve().parents[2]
GENERATED = {"configuration.md", "flows.md"}
HAND_WRITTEN = [
    ROOT / "README.md",
    *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name not in GENERATED),
]
EXAMPLES_ONLY = object()
"""A map or an array of tables: what the docs show there are examples."""


def _walk(prefix: str, cls: type, obj: Any, out: dict[str, Any]) -> None:
    for f, tp in fields(cls):
        value, key = getattr(obj, f.name), f"{prefix}.{f.name}"
        k = kind(tp)
        if k == "table":
            out[key] = None
            _walk(key, type(value), value, out)
        else:
            out[key] = EXAMPLES_ONLY if k in ("tables", "map") else value
        if k == "tables":  # their keys exist too (a bare key may be one of theirs)
            for item in dataclasses.fields(typing.get_args(tp)[0]):
                out[f"{key}.{item.name}"] = EXAMPLES_ONLY


def declared() -> dict[str, Any]:
    """'section.key' -> default of every job setting; key and M10_ name of every global."""
    out: dict[str, Any] = {}
    for name, cls in sections().items():
        _walk(name, cls, cls(), out)
    for s in SETTINGS:
        out[s.key] = out[s.env] = s.default
    return out


DECLARED = declared()


def same(stated: Any, default: Any) -> bool:
    if isinstance(default, tuple):
        default = list(default)
    if default is None or default == "" or default == []:
        return stated in (None, "", [], ())
    if isinstance(default, bool) or isinstance(stated, bool):
        return stated is default
    if isinstance(default, int | float):
        try:
            return float(stated) == float(default)
        except (TypeError, ValueError):
            return False
    if isinstance(default, list):
        return list(stated) == default if isinstance(stated, list | tuple) else False
    return str(stated) == str(default)


def _literal(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


# -- ```toml blocks ---------------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([\w.]+)\s*\]\]?\s*(?:#(.*))?$")
_KEY_LINE = re.compile(
    r"""^\s*([\w-]+)\s*=\s*("(?:[^"\\]|\\.)*"|\[[^\]]*\]|[^\s#]+)\s*(?:#(.*))?$"""
)


def toml_claims(page: Path) -> list[tuple[str, str, Any]]:
    """(where, 'section.key', stated default) for every value a toml block states."""
    claims = []
    for block in re.findall(r"```toml\n(.*?)```", page.read_text(), re.S):
        table, array = "", False
        for line in block.splitlines():
            where = f"{page.name}: {line.strip()}"
            header = _HEADER.match(line)
            if header:
                table, array = header.group(2), header.group(1) == "[["
                for k, v in re.findall(r"\b(\w+) = ([^,;()]+)", header.group(3) or ""):
                    claims.append((where, f"{table}.{k}", _literal(v.strip())))
                continue
            m = _KEY_LINE.match(line)
            if array or m is None or DECLARED.get(table) is EXAMPLES_ONLY:
                continue
            key, value, comment = m.group(1), _literal(m.group(2)), m.group(3) or ""
            if re.search(r"\be\.g\.|\bexample\b", comment):
                continue
            stated = re.search(r"\(default ([^)]+)\)", comment)
            claims.append((where, f"{table}.{key}", _literal(stated.group(1)) if stated else value))
    return claims


# -- Markdown tables with a default column ---------------------------------------------


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _tables(page: Path) -> list[tuple[list[str], list[str]]]:
    """(header cells lower-cased, row cells) of every Markdown table row."""
    rows, header = [], None
    for line in page.read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = [c.lower() for c in cells]
        elif not set(line) <= set("|-: "):
            rows.append((header, cells))
    return rows


def table_claims(page: Path) -> list[tuple[str, str, Any]]:
    claims = []
    for header, cells in _tables(page):
        if "default" not in header:
            continue
        col = header.index("default")
        literal = re.search(r"`([^`]+)`", cells[col])
        for token in re.findall(r"`([^`]+)`", " ".join(cells[:col])):
            m = re.fullmatch(r"\[([\w.]+)\] (\w+)", token)
            key = f"{m.group(1)}.{m.group(2)}" if m else token
            if key in DECLARED:
                where = f"{page.name}: | {' | '.join(cells)[:70]}"
                claims.append((where, key, _literal(literal.group(1)) if literal else None))
    return claims


# -- prose ------------------------------------------------------------------------------

_PROSE = re.compile(r"`(?:\[([\w.]+)\] )?([a-z_][\w.]*)` \((?:default )?(\d[\d_.]*)(?= s\b|[,);])")
_ENV = re.compile(r"`(M10_[A-Z0-9_]+)` \((?:`([^`]+)`|(\d+))[),;]")


def prose_claims(page: Path) -> list[tuple[str, str, Any]]:
    claims = []
    text = page.read_text()
    tables = set(re.findall(r"^\s*\[\[?\s*([\w.]+)", text, re.M))
    for m in _PROSE.finditer(text):
        section, key, value = m.groups()
        full = f"{section}.{key}" if section else key
        if full not in DECLARED:
            near = [f"{t}.{key}" for t in tables if f"{t}.{key}" in DECLARED]
            if len(near) != 1 or DECLARED[near[0]] is EXAMPLES_ONLY:
                continue
            full = near[0]
        claims.append((f"{page.name}: {m.group(0)}", full, _literal(value)))
    for m in _ENV.finditer(text):
        env, quoted, number = m.groups()
        if env in DECLARED:
            claims.append((f"{page.name}: {m.group(0)}", env, quoted or _literal(number)))
    return claims


def all_claims() -> list[tuple[str, str, Any]]:
    out: list[tuple[str, str, Any]] = []
    for page in HAND_WRITTEN:
        out += toml_claims(page) + table_claims(page) + prose_claims(page)
    return out


CLAIMS = all_claims()


def test_the_parsers_find_what_the_docs_state() -> None:
    """A parser that finds nothing checks nothing."""
    keys = {key for _, key, _ in CLAIMS}
    for expected in (
        "outbox.linger_seconds",  # README prose, outbox.md's block and prose
        "outbox.batch_size",
        "canary.target",  # a (default X) comment
        "retention.replay_log.max_age_days",  # a table header's comment
        "rollback.cooldown_seconds",
        "retry_r2_fallbacks.alert_after_hours",  # a Markdown table
        "M10_REDIS_URL",  # README prose
        "M10_LEASE_TTL_SECONDS",
        "lease_ttl_seconds",  # contract.md's table
    ):
        assert expected in keys, expected
    assert len(CLAIMS) >= 40


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: f"{c[0][:50]}|{c[1]}")
def test_every_stated_default_is_the_declared_one(claim: tuple[str, str, Any]) -> None:
    where, key, stated = claim
    assert DECLARED[key] is not EXAMPLES_ONLY, where
    assert same(stated, DECLARED[key]), (
        f"{where}: says {key} = {stated!r}, declared {DECLARED[key]!r}"
    )


# -- script tables ------------------------------------------------------------------------


def describe_schedule(on_calendar: str) -> str:
    """A timer's OnCalendar= in the README's words."""
    every = re.fullmatch(r"\*:\d+/(\d+)", on_calendar)
    if every:
        return f"every {every.group(1)} min"
    at = re.fullmatch(r"\*-\*-\* (\d\d:\d\d):00", on_calendar)
    if at:
        return f"daily {at.group(1)}"
    return {"minutely": "every minute", "hourly": "hourly", "daily": "daily"}[on_calendar]


def _lease(token: str) -> str:
    """A lease as the docs write it, in the registry's spelling."""
    base, at, host = token.partition("@")
    return re.sub(r"<\w+>", "*", base) + (f"@{HOST_PLACEHOLDER}" if at and host else "")


def script_rows(page: Path) -> list[tuple[Job, dict[str, str]]]:
    by_script = {j.script: j for j in jobs()}
    return [
        (by_script[cells[0].strip("`")], dict(zip(header, cells, strict=False)))
        for header, cells in _tables(page)
        if header[0] == "script" and cells[0].strip("`") in by_script
    ]


@pytest.mark.parametrize("page", ["README.md", "docs/contract.md"])
def test_script_tables_name_each_jobs_leases_and_schedule(page: str) -> None:
    rows = script_rows(ROOT / page)
    assert sorted(job.script for job, _ in rows) == sorted(j.script for j in jobs())
    for job, row in rows:
        leases = {_lease(t) for t in re.findall(r"`([^`]+)`", row["lease(s)"])}
        assert leases == set(job.lease_patterns), (page, job.script, leases)
        if "schedule" in row:
            said, want = row["schedule"], describe_schedule(job.schedule)
            assert said.startswith(want), (page, job.script, said, want)


def test_the_env_file_mode_stated_is_the_one_make_install_gives() -> None:
    from m10jobs.configdoc import HEADER

    makefile = (ROOT / "Makefile").read_text()
    mode = re.search(r"chmod (0[0-7]{3}) \S*m10jobs\.toml \S*/env\b", makefile)
    assert mode is not None
    for where, text in (
        ("systemd/env.example", (ROOT / "systemd/env.example").read_text().splitlines()[0]),
        ("the example config's header", HEADER),
        ("README.md", (ROOT / "README.md").read_text()),
    ):
        stated = set(re.findall(r"\b(0[0-7]{3})[` ,]+root:m10jobs", text))
        assert stated == {mode.group(1)}, (where, stated)
