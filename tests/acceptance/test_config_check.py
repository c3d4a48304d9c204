"""`m10 config check` and the jobs' own start-up validation, run as an operator would."""

from __future__ import annotations

import os
import typing
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from m10jobs.config import load_config
from m10jobs.configdoc import kind
from m10jobs.registry import sections
from m10jobs.settings import fields
from tests.conftest import run_cli

EXAMPLE = Path(__file__).resolve().parents[2] / "systemd" / "m10jobs.toml.example"
UNREACHABLE_DB = "postgresql://m10:hunter2-secret@127.0.0.1:9/nowhere"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No services: validation must refuse before anything is contacted."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("M10_")}
    return {**clean, "M10_DATABASE_URL": UNREACHABLE_DB, "M10_STATE_DIR": str(tmp_path)}


def check(env: dict[str, str], *args: str) -> Any:
    return run_cli("m10", "config", "check", *args, env=env)


def test_shipped_example_is_valid_and_shown_with_origins(env: dict[str, str]) -> None:
    p = check(env, "--config", str(EXAMPLE), "--redis-url", "redis://:pw-in-flag@r:6379/0")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert f"file: {EXAMPLE}" in out
    assert "[outbox]" in out and "[[canary.probes]]" in out and "[retention.outbox]" in out
    line = {ln.split(" = ")[0]: ln for ln in out.splitlines() if " = " in ln}
    assert line["database_url"].endswith("# env M10_DATABASE_URL")
    assert line["redis_url"].endswith("# flag --redis-url")
    assert line["lease_ttl_seconds"].endswith("# file")
    assert line["log_format"].endswith("# default")
    assert "hunter2-secret" not in out + p.stderr and "pw-in-flag" not in out + p.stderr


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[outbox]\nbatch_sise = 5\n", "outbox.batch_sise: unknown key; did you mean 'batch_size'"),
        ("[canery]\ntarget = 'x'\n", "canery: unknown section; did you mean 'canary'"),
        ("stat_dir = '/x'\n", "stat_dir: unknown key; did you mean 'state_dir'"),
    ],
)
def test_typo_is_78_with_a_suggestion(
    env: dict[str, str], tmp_path: Path, toml: str, expected: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    p = check(env, "--config", str(cfg))
    assert p.returncode == 78
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0] and str(cfg) in errors[0]
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("script", ["m10-outbox-processor", "m10-canary", "m10-maintenance"])
def test_jobs_refuse_unknown_keys_before_touching_anything(
    env: dict[str, str], tmp_path: Path, script: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[outbox]\nbatch_sise = 5\n[canery]\n")
    p = run_cli(script, "--config", str(cfg), env=env)
    assert p.returncode == 78, p.stderr
    assert "outbox.batch_sise: unknown key; did you mean 'batch_size'" in p.stderr
    assert "1 more: run `m10 config check`" in p.stderr
    assert "unreachable" not in p.stderr and "hunter2-secret" not in p.stdout + p.stderr


def test_log_format_typo_is_78_naming_the_accepted_values(env: dict[str, str]) -> None:
    p = run_cli("m10-canary", "--dry-run", env={**env, "M10_LOG_FORMAT": "txt"})
    assert p.returncode == 78
    assert "M10_LOG_FORMAT" in p.stderr and "json or text" in p.stderr


@pytest.mark.parametrize(
    "line",
    [
        'lease_ttl_seconds = "300"',
        "batch_size = 5",
        "[outbox]\nbatch_size = 1.5",
        "[daily_stats]\nupload = 1",
        "[matviews]\nviews = 'a.b'",
        "[cost]\nanomaly_k = true",
        "[[canary.probes]]\nname = 3\ntype = 'redis'",
    ],
)
def test_wrong_types_through_the_cli(env: dict[str, str], tmp_path: Path, line: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(line + "\n")
    p = check(env, "--config", str(cfg))
    assert p.returncode == 78 and "error: config" in p.stderr, p.stderr


WRONG: dict[Any, Any] = {int: "x", float: "x", str: 5, bool: "yes", Decimal: True}


def _declared_values() -> list[tuple[str, str, Any]]:
    """(section path, key, a value of the wrong type) for every declared scalar setting."""
    cases = []

    def walk(path: str, cls: type) -> None:
        for f, tp in fields(cls):
            if kind(tp) == "table":
                walk(f"{path}.{f.name}", typing.cast(type, tp))
            elif kind(tp) == "value":
                base = next((a for a in typing.get_args(tp) if a is not type(None)), tp)
                wrong = 5 if typing.get_origin(base) is tuple else WRONG[base]
                cases.append((path, f.name, wrong))

    for name, cls in sections().items():
        walk(name, cls)
    return cases


@pytest.mark.parametrize(("path", "key", "wrong"), _declared_values(), ids=lambda v: str(v))
def test_every_declared_setting_refuses_a_wrong_type(
    tmp_path: Path, path: str, key: str, wrong: Any
) -> None:
    table: dict[str, Any] = {key: wrong}
    if path.startswith("canary"):  # probes need a type for the rest to be checked
        table = {**table, "probes": [{"name": "r", "type": "redis"}]}
    data: dict[str, Any] = table
    for part in reversed(path.split(".")):
        data = {part: data}
    cfg = load_config(None, env={})
    cfg = type(cfg)(cfg.values, cfg.origins, data, "test.toml")
    problems = cfg.problems(sections())
    assert len(problems) == 1 and f"{path}.{key}: expected" in problems[0], problems


@pytest.mark.parametrize(
    ("content", "expected"), [(None, "does not exist"), ("[outbox\n", "not valid TOML")]
)
def test_a_file_that_cannot_be_read_is_78(
    env: dict[str, str], tmp_path: Path, content: str | None, expected: str
) -> None:
    cfg = tmp_path / "c.toml"
    if content is not None:
        cfg.write_text(content)
    p = check(env, "--config", str(cfg))
    assert p.returncode == 78 and expected in p.stderr and "Traceback" not in p.stderr
