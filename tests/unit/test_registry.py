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


def test_by_script_finds_every_declared_job() -> None:
    from m10jobs.registry import by_script

    for job in jobs():
        assert by_script(job.script) is job


def test_a_console_script_imports_only_its_own_flow_package() -> None:
    # every timer start and --help: one declaration imported, not all of them
    import subprocess
    import sys

    for job in jobs():
        code = (
            "import sys\nfrom m10jobs.registry import by_script\n"
            f"job = by_script({job.script!r})\n"
            "flows = {m.split('.')[2] for m in sys.modules if m.startswith('m10jobs.jobs.')}\n"
            "own = job.tasks[0].run.split('.')[2]\n"
            "print(sorted(flows - {own, 'outbox'}))"
        )  # outbox: its stream names
        out = subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout
        assert out.strip() == "[]", (job.script, out)


def test_every_pass_is_named_lazily_and_resolves() -> None:
    # declarations name their pass "module:function" inside their own flow package
    from m10jobs.registry import resolve

    for job in jobs():
        for task in job.tasks:
            assert isinstance(task.run, str), (job.script, task.name)
            assert task.run.startswith("m10jobs.jobs."), task.run
            assert callable(resolve(task.run)), task.run


def test_declarations_import_no_pass_module() -> None:
    # what every job start and --help load: the registry, each flow's declaration and
    # settings, never a pass module (those import their drivers at the top)
    import subprocess
    import sys

    code = (
        "import sys\nfrom m10jobs.registry import jobs, sections\nsections()\n"
        "passes = {t.run.split(':')[0] for j in jobs() for t in j.tasks}\n"
        "loaded = passes & set(sys.modules)\nassert not loaded, loaded\n"
        "assert len(passes) >= 9, passes"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_every_probe_type_has_a_probe() -> None:
    from m10jobs.jobs.canary.runner import PROBES
    from m10jobs.jobs.canary.settings import PROBE_TYPES

    assert PROBES.keys() == PROBE_TYPES.keys()


def test_scope_decides_the_lease_name_in_one_place() -> None:
    from m10jobs.config import load_config
    from m10jobs.registry import by_script, scope_of

    config = load_config(None, env={"M10_HOSTNAME": "web-2"})
    scopes = {t.lease_pattern: t.scope for j in jobs() for t in j.tasks}
    assert scopes["m10:rollback@<hostname>"] == "host"
    assert scopes["m10:retry_r2_fallbacks@<hostname>"] == "host"
    assert scopes["retention_cleanup@<hostname>"] == "host"  # retention's files: per host
    for cluster in (
        "m10:outbox_processor",
        "m10:canary",
        "m10:synthetic_traffic",
        "aos:cost_snapshot_hourly",
        "aos:cost_snapshot_daily",
        "reclaim_gc",
        "retention_cleanup",
        "m10:daily_stats",
    ):
        assert scopes[cluster] == "cluster"
    rollback = by_script("m10-rollback").tasks[0]
    assert rollback.instances(config) == [(None, "m10:rollback@web-2")]
    assert by_script("m10-canary").tasks[0].instances(config) == [(None, "m10:canary")]
    assert scope_of("m10:rollback@web-2") == "host"
    assert scope_of("m10:canary") == "cluster" and scope_of("m10:canary@web-2") is None
    assert scope_of("matview_public.x") == "cluster" and scope_of("nobody") is None
    assert scope_of("retention_cleanup") == "cluster"
    assert scope_of("retention_cleanup@web-2") == "host"


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
