"""The registry is the single declaration: pyproject, CLI and locks derive from it."""

from __future__ import annotations

import tomllib
from pathlib import Path

from m10jobs.registry import find, jobs

ROOT = Path(__file__).resolve().parents[2]


def test_every_registered_job_has_its_console_script_and_back() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    registered = {j.script for j in jobs()}
    declared = {name for name, target in scripts.items() if "cli.entry:" in target}
    assert registered == declared
    for name in declared:
        assert scripts[name] == f"m10jobs.cli.entry:{name.replace('-', '_')}"


def test_no_two_jobs_share_a_lock_and_jobs_are_complete() -> None:
    # tasks of one job may share a lease (the dead-letter pipeline); jobs never do
    locks = [lock for j in jobs() for lock in set(j.locks)]
    assert len(locks) == len(set(locks))
    for job in jobs():
        assert job.summary and job.example.startswith(job.script) and job.schedule
        assert job.timeout_seconds < (job.ttl_seconds or 300)


def test_find_by_script_short_name_and_task() -> None:
    job, task = find("maintenance")
    assert job.script == "m10-maintenance" and task is None
    job, task = find("reclaim_gc")
    assert task is not None and task.lock == "reclaim_gc"


def test_each_job_lives_in_its_conventional_module() -> None:
    # a console script imports only this module: keep the convention
    import importlib

    from m10jobs.registry import by_script, module_name

    for job in jobs():
        assert importlib.import_module(module_name(job.script)).JOB is job
        assert by_script(job.script) is job


def test_scope_decides_the_lease_name_in_one_place() -> None:
    from m10jobs.config import load_config
    from m10jobs.registry import by_script, scope_of

    config = load_config(None, env={"M10_HOSTNAME": "web-2"})
    scopes = {t.lease_pattern: t.scope for j in jobs() for t in j.tasks}
    assert scopes["m10:rollback@<hostname>"] == "host"
    assert scopes["m10:retry_r2_fallbacks@<hostname>"] == "host"
    for cluster in ("m10:outbox_processor", "m10:canary", "m10:synthetic_traffic",
                    "aos:cost_snapshot_hourly", "aos:cost_snapshot_daily", "reclaim_gc",
                    "retention_cleanup", "m10:daily_stats"):
        assert scopes[cluster] == "cluster"
    rollback = by_script("m10-rollback").tasks[0]
    assert rollback.instances(config) == [(None, "m10:rollback@web-2")]
    assert by_script("m10-canary").tasks[0].instances(config) == [(None, "m10:canary")]
    assert scope_of("m10:rollback@web-2") == "host"
    assert scope_of("m10:canary") == "cluster" and scope_of("m10:canary@web-2") is None
    assert scope_of("matview_public.x") == "cluster" and scope_of("nobody") is None


def test_bad_hostname_setting_is_a_config_error() -> None:
    import pytest

    from m10jobs.config import load_config
    from m10jobs.errors import ConfigError

    with pytest.raises(ConfigError, match="hostname"):
        load_config(None, env={"M10_HOSTNAME": "a b@c"})


def test_every_setting_is_declared_with_help_and_a_usable_default() -> None:
    """What the example config, the reference and `m10 config check` rely on."""
    import dataclasses
    import typing

    from m10jobs.configdoc import kind
    from m10jobs.registry import sections
    from m10jobs.settings import fields, spec

    def walk(path: str, cls: type) -> None:
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, path
        assert cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("), path
        cls()  # every key optional: the defaults alone make a valid table
        for f, tp in fields(cls):
            assert spec(f).help, f"{path}.{f.name} has no help"
            if kind(tp) == "table":
                walk(f"{path}.{f.name}", typing.cast(type, tp))
            elif kind(tp) == "tables":
                walk(f"{path}.{f.name}[]", typing.get_args(tp)[0])

    found = sections()
    assert set(found) >= {"outbox", "dead_letter", "retention", "canary", "rollback", "cost"}
    for name, cls in found.items():
        assert name == cls.SECTION  # type: ignore[attr-defined]
        walk(name, cls)
