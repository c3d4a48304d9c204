"""Configuration: command-line flag > environment > TOML file > default
(docs/contract.md, "Configuration").

Global settings are declared once in SETTINGS (which also yields their CLI
flags and env names); each job's tables are declared as settings classes on its
Job (m10jobs.settings) and read through Config.settings().  Config.check() is
the one validation of the whole file: jobs run it at start, `m10 config check`
prints it.  Anything wrong is a ConfigError naming the key (exit 78).
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from m10jobs.errors import ConfigError
from m10jobs.settings import build, fields, got, suggest

if TYPE_CHECKING:
    from pathlib import Path

# pathlib and urllib.parse are imported where a value is parsed: --help reads SETTINGS only.
DEFAULT_CONFIG_PATH = "/etc/m10jobs/m10jobs.toml"
T = TypeVar("T")


def _url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        from urllib.parse import urlsplit

        if "://" in value and urlsplit(value).scheme not in schemes:
            raise ValueError(f"expected a {'/'.join(schemes)} URL")
        return value

    return parse


def _path(value: str) -> Path:
    from pathlib import Path

    if not value:
        raise ValueError("expected a directory path")
    return Path(value)


def _ttl(value: str) -> int:
    ttl = int(value)
    if not 1 <= ttl <= 86400:
        raise ValueError("expected seconds between 1 and 86400")
    return ttl


def _pooling(value: str) -> str:
    from m10jobs.edges.conninfo import POOLING_MODES

    if value not in POOLING_MODES:
        raise ValueError(f"expected one of {', '.join(POOLING_MODES)}")
    return value


def _hostname(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value):
        raise ValueError("expected a host name (letters, digits, '.', '_', '-'; at most 63)")
    return value


def _log_format(value: str) -> str:
    if value not in ("json", "text"):
        raise ValueError("expected json or text")
    return value


@dataclass(frozen=True)
class Setting:
    """A global setting: a flag (unless flag=False), an env variable and a top-level
    key of the file (unless file=False)."""

    key: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    flag: bool = True
    file: bool = True
    toml: type = str
    """The TOML type the file must give (a quoted "300" is not an integer)."""
    secret: bool = False
    example: Any = None

    @property
    def default_value(self) -> Any:
        """The default as a value: one given as text goes through the parser as any value
        does (so the path defaults are declared without importing pathlib)."""
        return self.parse(self.default) if isinstance(self.default, str) else self.default

    @property
    def env(self) -> str:
        return "M10_" + self.key.upper()

    @property
    def option(self) -> str:
        return "--" + self.key.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "database_url",
        None,
        _url(("postgresql", "postgres")),
        "libpq URI or conninfo; jobs that need it exit 78 while it is unset",
        secret=True,
        example="postgresql://m10_ops_login@db.internal:5432/platform",
    ),
    Setting(
        "database_pooling",
        "none",
        _pooling,
        "none, or the pool_mode of a PgBouncer between the jobs and PostgreSQL: session "
        "or transaction (no startup options; transaction: no prepared statements, the "
        "outbox linger polls instead of LISTEN); README, High availability",
        flag=False,
        example="transaction",
    ),
    Setting(
        "redis_url",
        "redis://localhost:6379/0",
        _url(("redis", "rediss", "unix", "redis+sentinel")),
        "Redis URL; redis+sentinel://[:PASSWORD@]H1:26379,H2:26379/SERVICE[/DB]"
        "[?sentinel_password=...] follows the primary Sentinel names (no Redis Cluster)",
        secret=True,
    ),
    Setting("state_dir", "/var/lib/m10jobs", _path, "fallback uploads, canary reports"),
    Setting("log_dir", "/var/log/m10", _path, "daily stats CSVs"),
    Setting(
        "metrics_dir",
        None,
        _path,
        "node_exporter textfile directory (unset: off); the installed units set it to "
        "the one given to `m10 units render --metrics-dir` (default: the example shown), "
        "the only one their sandbox lets jobs write to",
        example="/var/lib/prometheus/node-exporter",
    ),
    Setting(
        "r2_endpoint_url",
        None,
        _url(("http", "https")),
        "S3-compatible endpoint",
        flag=False,
        example="https://ACCOUNT.r2.cloudflarestorage.com",
    ),
    Setting(
        "r2_bucket", None, str, "bucket for uploads and archives", flag=False, example="m10-ops"
    ),
    Setting(
        "lease_ttl_seconds",
        300,
        _ttl,
        "lease TTL (1..86400); else each job's own",
        flag=False,
        toml=int,
    ),
    Setting(
        "log_format",
        None,
        _log_format,
        "log lines on stderr: json or text (default: text on a terminal, else json)",
        file=False,
    ),
    Setting(
        "hostname",
        None,
        _hostname,
        "this host's name in host-local lease names `<lock>@<host>` (default: the OS host name)",
        flag=False,
        example="web-1",
    ),
)
GLOBAL = {s.key: s for s in SETTINGS}
Sections = Mapping[str, type] | Callable[[], Mapping[str, type]]
"""The declared tables by name, or the function that loads them (registry.sections)."""


@dataclass(frozen=True)
class Config:
    """The global settings resolved (values and where each came from) and the file's
    tables, validated on first use (settings()) or all at once (check())."""

    values: Mapping[str, Any]
    origins: Mapping[str, str]
    file: Mapping[str, Any] = field(default_factory=dict)
    source: str = "defaults"
    errors: tuple[str, ...] = ()
    """Bad global values, kept by load_config(strict=False) for `m10 config check`."""
    _tables: dict[type, Any] = field(default_factory=dict, repr=False, compare=False)

    def __getattr__(self, key: str) -> Any:
        try:
            return self.values[key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def host(self) -> str:
        """This host's name in host-local lease names (`<lock>@<host>`): the hostname
        setting (M10_HOSTNAME; tests run several "hosts" on one machine), else the OS's
        (uname's nodename: what socket.gethostname() returns on Linux, without the import)."""
        return self.values.get("hostname") or os.uname().nodename

    def settings(self, cls: type[T]) -> T:
        """The validated table `cls.SECTION` of the file (defaults where absent); the
        first problem is a ConfigError naming the key."""
        if cls not in self._tables:
            problems: list[str] = []
            name: str = cls.SECTION  # type: ignore[attr-defined]
            data = self.file.get(name, {})
            if not isinstance(data, dict):
                problems.append(f"{name}: expected a table{got(data)}")
                data = {}
            self._tables[cls] = build(cls, data, name, problems)
            if problems:
                raise ConfigError(self._line(problems))
        return typing.cast(T, self._tables[cls])

    def problems(self, sections: Sections) -> list[str]:
        """Every problem of the file against the global settings and `sections`
        (name -> settings class), one line each.  Given as a function (registry.sections),
        the declared tables are loaded only when the file has more than global keys."""
        tables = (
            sections
            if not callable(sections)
            else sections()
            if any(key not in GLOBAL for key in self.file)
            else {}
        )
        found: list[str] = []
        known = [s.key for s in SETTINGS if s.file] + list(tables)
        for key, value in self.file.items():
            if key in tables:
                if not isinstance(value, dict):
                    found.append(f"{key}: expected a table{got(value)}")
                    continue
                before, cls = len(found), tables[key]
                table = build(cls, value, key, found)
                if len(found) == before:  # only a valid table is kept for settings()
                    self._tables[cls] = table
            elif key in GLOBAL and not GLOBAL[key].file:
                found.append(f"{key}: can only be set by the environment ({GLOBAL[key].env})")
            elif key not in known:
                what = "section" if isinstance(value, dict) else "key"
                found.append(f"{key}: unknown {what}{suggest(key, known) or _home(key, tables)}")
        return [*self.errors, *(self._where(p) for p in found)]

    def check(self, sections: Sections) -> None:
        """Refuse the whole file if anything in it is wrong (what jobs do at start)."""
        found = self.problems(sections)
        if found:
            more = f" (and {len(found) - 1} more: run `m10 config check`)" if found[1:] else ""
            raise ConfigError(found[0] + more)

    def _where(self, problem: str) -> str:
        return f"config {problem} (in {self.source}); fix or remove it (docs/configuration.md)"

    def _line(self, problems: list[str]) -> str:
        more = f" (and {len(problems) - 1} more)" if problems[1:] else ""
        return self._where(problems[0]) + more

    def require(self, key: str) -> Any:
        value = self.values.get(key)
        if value in (None, ""):
            setting = GLOBAL[key]
            raise ConfigError(f"{key} is not set; set {setting.env} or '{key}' in the config file")
        return value


def _home(key: str, sections: Mapping[str, type]) -> str:
    """For a section's key written at the top of the file: which table it belongs in."""
    homes = [
        f"[{name}]" for name, cls in sections.items() if any(f.name == key for f, _ in fields(cls))
    ]
    return f"; it is a key of {', '.join(homes)}: move it under its table" if homes else ""


def config_path(flag: str | None, env: Mapping[str, str]) -> Path | None:
    """M10_CONFIG set but empty means no file at all: defaults and environment only
    (a DBA migrating as the postgres account, which may not read the host's file)."""
    from pathlib import Path

    if flag:
        return Path(flag)
    if "M10_CONFIG" in env:
        return Path(env["M10_CONFIG"]) if env["M10_CONFIG"] else None
    default = Path(DEFAULT_CONFIG_PATH)
    return default if default.exists() else None


def read_toml(path: Path) -> dict[str, Any]:
    """The config file through the safe reader: no symlink/FIFO/directory, capped, UTF-8.
    (tomllib and the reader are imported here, so --help does not load them.)"""
    import tomllib

    from m10jobs.edges import files

    try:
        text = files.read_text(path, files.CONFIG)
    except ConfigError as exc:
        if "does not exist" in str(exc):
            raise ConfigError(
                f"config file {path} does not exist; create it or fix --config/M10_CONFIG"
            ) from None
        raise
    assert text is not None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} nests too deeply; fix it") from None


def load_config(
    config_file: str | None = None,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    strict: bool = True,
) -> Config:
    """The global settings resolved (flag > env > file > default); a bad value is a
    ConfigError, or with strict=False kept in Config.errors (`m10 config check`)."""
    env = os.environ if env is None else env
    flags = flags or {}
    register_secrets({}, env, flags)  # first: a file that fails to load is an error line
    path = config_path(config_file, env)
    file = read_toml(path) if path else {}
    register_secrets(file, {}, {})
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    errors: list[str] = []
    for s in SETTINGS:
        origin, raw = next(
            (
                (o, v)
                for o, v in (
                    ("flag", flags.get(s.key)),
                    ("env", env.get(s.env)),
                    ("file", file.get(s.key) if s.file else None),
                )
                if v not in (None, "")
            ),
            ("default", None),
        )
        if origin == "default":
            values[s.key], origins[s.key] = s.default_value, origin
            continue
        where = {"flag": s.option, "env": s.env, "file": f"{s.key} in {path}"}[origin]
        try:
            if origin == "file" and (not isinstance(raw, s.toml) or isinstance(raw, bool)):
                raise ValueError(f"expected {'an integer' if s.toml is int else 'a string'}")
            values[s.key] = s.parse(str(raw))
        except ValueError as exc:  # a secret's value is never echoed, not even malformed
            errors.append(
                f"config key {s.key} ({where}): {exc}" + ("" if s.secret else f", got {raw!r}")
            )
            values[s.key], origins[s.key] = s.default_value, "default"
            continue
        origins[s.key] = origin
    if errors and strict:
        raise ConfigError(errors[0])
    from m10jobs.edges import conninfo

    conninfo.POOLING = values["database_pooling"]  # every connection in this process
    return Config(values, origins, file, str(path) if path else "defaults", tuple(errors))


def register_secrets(
    file: Mapping[str, Any], env: Mapping[str, str], flags: Mapping[str, Any]
) -> None:
    """Register (m10jobs.redact) every secret the raw file, the environment and the
    flags carry, before anything is validated or logged: the DSN passwords (raw and
    percent-decoded) of every setting and string, the credential variables of the
    environment, every value under a secret-looking key, and what the declared
    settings say is secret (rollback.env values, pass_env variables, probe URLs)."""
    from m10jobs import redact

    redact.register_env(env)
    redact.register_tree(dict(flags))
    redact.register_tree(file)
    for s in SETTINGS:  # a secret setting that is not a URL/conninfo is a secret whole
        for raw in (flags.get(s.key), env.get(s.env), file.get(s.key)):
            if s.secret and isinstance(raw, str) and "://" not in raw and "=" not in raw:
                redact.register_secret(raw)
    if any(key not in GLOBAL for key in file):  # the tables' declarations
        from m10jobs.registry import sections
        from m10jobs.settings import register_secrets as register_table

        for name, cls in sections().items():
            register_table(cls, file.get(name))
