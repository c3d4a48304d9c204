"""Configuration: command-line flag > environment > TOML file > default (DESIGN.md A3).

Core settings are declared once in SETTINGS (which also yields their CLI flags
and env names); job settings live in TOML sections read through Section, whose
getters name the offending key when a value is wrong (exit 78).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from m10jobs.errors import ConfigError
from m10jobs.redact import register_secret

DEFAULT_CONFIG_PATH = Path("/etc/m10jobs/m10jobs.toml")
T = TypeVar("T")


def _url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if "://" in value and urlsplit(value).scheme not in schemes:
            raise ValueError(f"expected a {'/'.join(schemes)} URL")
        return value

    return parse


def _path(value: str) -> Path:
    if not value:
        raise ValueError("expected a directory path")
    return Path(value)


def _ttl(value: str) -> int:
    ttl = int(value)
    if not 1 <= ttl <= 86400:
        raise ValueError("expected seconds between 1 and 86400")
    return ttl


@dataclass(frozen=True)
class Setting:
    key: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    flag: bool = True

    @property
    def env(self) -> str:
        return "M10_" + self.key.upper()

    @property
    def option(self) -> str:
        return "--" + self.key.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("database_url", None, _url(("postgresql", "postgres")), "libpq URI or conninfo"),
    Setting("redis_url", "redis://localhost:6379/0", _url(("redis", "rediss", "unix")),
            "Redis URL"),
    Setting("state_dir", Path("/var/lib/m10jobs"), _path, "fallback uploads, canary reports"),
    Setting("log_dir", Path("/var/log/m10"), _path, "daily stats CSVs"),
    Setting("metrics_dir", None, _path, "node_exporter textfile directory (unset: off)"),
    Setting("r2_endpoint_url", None, _url(("http", "https")), "S3-compatible endpoint",
            flag=False),
    Setting("r2_bucket", None, str, "bucket for uploads and archives", flag=False),
    Setting("lease_ttl_seconds", 300, _ttl, "lease TTL", flag=False),
)


@dataclass(frozen=True)
class Section:
    """One TOML table, e.g. [outbox]; getters validate and name the key on error."""

    name: str
    data: Mapping[str, Any]
    source: str

    def _fail(self, key: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(
            f"config key {self.name}.{key}: expected {expected}, got {value!r} "
            f"(in {self.source}); fix the value or remove it to use the default"
        )

    def get(self, key: str, default: T, check: Callable[[Any], bool] | None = None,
            expected: str = "a valid value") -> T:
        value = self.data.get(key, default)
        want = type(default) if default is not None else None
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (want is not None and not isinstance(value, want)) or (
            isinstance(value, bool) and want is not bool
        ):
            raise self._fail(key, expected if check else f"a {want.__name__}", value)
        if check is not None and not check(value):
            raise self._fail(key, expected, value)
        return value

    def int(self, key: str, default: int, *, min: int | None = None,
            max: int | None = None) -> int:
        bounds = " ".join(p for p in (f">= {min}" if min is not None else "",
                                      f"<= {max}" if max is not None else "") if p)
        return self.get(key, default,
                        lambda v: (min is None or v >= min) and (max is None or v <= max),
                        f"an integer {bounds}".strip())

    def float(self, key: str, default: float, *, min: float | None = None) -> float:
        return self.get(key, default, lambda v: min is None or v >= min,
                        f"a number >= {min}" if min is not None else "a number")

    def str(self, key: str, default: str) -> str:
        return self.get(key, default, lambda v: v != "", "a non-empty string")

    def bool(self, key: str, default: bool) -> bool:
        return self.get(key, default)

    def list(self, key: str, default: list[Any]) -> list[Any]:
        return self.get(key, default)

    def table(self, key: str) -> Section:
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            raise self._fail(key, "a table", value)
        return Section(f"{self.name}.{key}", value, self.source)


@dataclass(frozen=True)
class Config:
    values: Mapping[str, Any]
    origins: Mapping[str, str]
    file: Mapping[str, Any] = field(default_factory=dict)
    source: str = "defaults"

    def __getattr__(self, key: str) -> Any:
        try:
            return self.values[key]
        except KeyError:
            raise AttributeError(key) from None

    def section(self, name: str) -> Section:
        data = self.file.get(name, {})
        if not isinstance(data, dict):
            raise ConfigError(f"config key {name}: expected a table (in {self.source})")
        return Section(name, data, self.source)

    def require(self, key: str) -> Any:
        value = self.values.get(key)
        if value in (None, ""):
            setting = next(s for s in SETTINGS if s.key == key)
            raise ConfigError(
                f"{key} is not set; set {setting.env} or '{key}' in the config file"
            )
        return value


def config_path(flag: str | None, env: Mapping[str, str]) -> Path | None:
    """M10_CONFIG set but empty means no file at all: defaults and environment only
    (a DBA migrating as the postgres account, which may not read the host's file)."""
    if flag:
        return Path(flag)
    if "M10_CONFIG" in env:
        return Path(env["M10_CONFIG"]) if env["M10_CONFIG"] else None
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


def read_toml(path: Path) -> dict[str, Any]:
    """The config file through the safe reader: no symlink/FIFO/directory, capped, UTF-8."""
    from m10jobs.edges import files

    try:
        text = files.read_text(path, files.CONFIG)
    except ConfigError as exc:
        if "does not exist" in str(exc):
            raise ConfigError(f"config file {path} does not exist; create it or fix --config/"
                              "M10_CONFIG") from None
        raise
    assert text is not None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} nests too deeply; fix it") from None


def load_config(config_file: str | None = None, flags: Mapping[str, Any] | None = None,
                env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    flags = flags or {}
    path = config_path(config_file, env)
    file = read_toml(path) if path else {}
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for s in SETTINGS:
        origin, raw = next(
            ((o, v) for o, v in (("flag", flags.get(s.key)), ("env", env.get(s.env)),
                                 ("file", file.get(s.key))) if v not in (None, "")),
            ("default", None),
        )
        if origin == "default":
            values[s.key], origins[s.key] = s.default, origin
            continue
        where = {"flag": s.option, "env": s.env, "file": f"{s.key} in {path}"}[origin]
        try:
            values[s.key] = s.parse(str(raw))
        except ValueError as exc:
            raise ConfigError(
                f"config key {s.key} ({where}): {exc}, got {raw!r}"
                if s.key not in ("database_url", "redis_url")
                else f"config key {s.key} ({where}): {exc}"
            ) from None
        origins[s.key] = origin
    for key in ("database_url", "redis_url"):
        register_secret(_password_of(values.get(key)))
    register_secret(env.get("AWS_SECRET_ACCESS_KEY"))
    return Config(values, origins, file, str(path) if path else "defaults")


def _password_of(url: str | None) -> str | None:
    if not url or "://" not in url:
        return None
    try:
        return urlsplit(url).password
    except ValueError:
        return None
