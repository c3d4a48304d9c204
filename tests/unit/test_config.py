from __future__ import annotations

import re
from pathlib import Path

import pytest

from m10jobs.config import load_config
from m10jobs.errors import ConfigError
from m10jobs.jobs.maintenance.settings import RetentionSettings
from m10jobs.jobs.outbox.settings import OutboxSettings
from m10jobs.registry import sections


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('state_dir = "/from/file"\nlog_dir = "/file/log"\nredis_url = "redis://f/1"\n')
    env = {"M10_CONFIG": str(cfg), "M10_LOG_DIR": "/env/log", "M10_REDIS_URL": "redis://e/2"}
    c = load_config(None, {"redis_url": "redis://flag/3"}, env)
    assert c.redis_url == "redis://flag/3" and c.origins["redis_url"] == "flag"
    assert c.log_dir == Path("/env/log") and c.origins["log_dir"] == "env"
    assert c.state_dir == Path("/from/file") and c.origins["state_dir"] == "file"
    assert c.metrics_dir is None and c.origins["metrics_dir"] == "default"
    assert c.lease_ttl_seconds == 300


def test_sections_validate_and_name_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[outbox]\nbatch_size = "big"\nretry_base_seconds = 2\n')
    config = load_config(str(cfg), env={})
    with pytest.raises(
        ConfigError,
        match=r"outbox\.batch_size: expected an integer between "
        r"1 and 10000, got 'big'",
    ) as info:
        config.settings(OutboxSettings)
    assert info.value.exit_code == 78 and str(cfg) in str(info.value)
    cfg.write_text("[outbox]\nretry_base_seconds = 2\n")
    s = load_config(str(cfg), env={}).settings(OutboxSettings)
    assert s.retry_base_seconds == 2.0 and isinstance(s.retry_base_seconds, float)
    assert s.batch_size == 1000  # absent: the declared default


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[outbox]\nbatch_sise = 5\n", "outbox.batch_sise: unknown key; did you mean 'batch_size'"),
        ("[canery]\ntarget = 'x'\n", "canery: unknown section; did you mean 'canary'"),
        (
            "lease_ttl_second = 30\n",
            "lease_ttl_second: unknown key; did you mean 'lease_ttl_seconds'",
        ),
        (
            "[retention.replay_logs]\nmax_age_days = 3\n",
            "retention.replay_logs: unknown key; did you mean 'replay_log'",
        ),
        (
            "[[canary.probes]]\nname = 'r'\ntype = 'redis'\nmax_pending = 3\n",
            "canary.probes[0].max_pending: not a key of a redis probe",
        ),
        ('log_format = "text"\n', "log_format: can only be set by the environment"),
        (
            "max_replays = 2\n",
            "max_replays: unknown key; it is a key of [dead_letter]: move it under its table",
        ),
    ],
)
def test_unknown_names_are_refused_with_a_suggestion(
    tmp_path: Path, toml: str, message: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    config = load_config(str(cfg), env={})
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        config.check(sections())
    assert info.value.exit_code == 78 and str(cfg) in str(info.value)


def test_every_problem_is_listed_once(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[outbox]\nbatch_sise = 5\nmax_attempts = 0\n[canery]\n")
    problems = load_config(str(cfg), env={}).problems(sections())
    assert [p.split(":")[0] for p in problems] == [
        "config outbox.batch_sise",
        "config outbox.max_attempts",
        "config canery",
    ]


def test_nested_tables_keep_their_own_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[retention.outbox]\nenabled = false\n")
    s = load_config(str(cfg), env={}).settings(RetentionSettings)
    assert (s.outbox.enabled, s.outbox.max_age_days) == (False, 7)
    assert (s.replay_log.enabled, s.replay_log.max_age_days) == (True, 30)


def test_log_format_is_json_or_text() -> None:
    with pytest.raises(ConfigError, match=r"M10_LOG_FORMAT.*json or text") as info:
        load_config(None, None, {"M10_LOG_FORMAT": "txt"})
    assert info.value.exit_code == 78
    assert load_config(None, None, {"M10_LOG_FORMAT": "text"}).log_format == "text"


@pytest.mark.parametrize("line", ['lease_ttl_seconds = "300"', "state_dir = 5", "redis_url = true"])
def test_global_keys_in_the_file_need_their_toml_type(tmp_path: Path, line: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(line + "\n")
    with pytest.raises(ConfigError, match=line.split()[0]):
        load_config(str(cfg), env={})


@pytest.mark.parametrize(
    "env, key",
    [
        ({"M10_LEASE_TTL_SECONDS": "0"}, "lease_ttl_seconds"),
        ({"M10_LEASE_TTL_SECONDS": "soon"}, "lease_ttl_seconds"),
        ({"M10_DATABASE_URL": "mysql://x"}, "database_url"),
        ({"M10_R2_ENDPOINT_URL": "ftp://x"}, "r2_endpoint_url"),
    ],
)
def test_bad_values_raise_config_errors_naming_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key) as info:
        load_config(None, None, env)
    assert info.value.exit_code == 78


def test_required_setting_says_how_to_set_it() -> None:
    with pytest.raises(ConfigError, match="M10_DATABASE_URL"):
        load_config(None, None, {}).require("database_url")


def test_database_password_is_not_echoed_in_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, None, {"M10_DATABASE_URL": "mysql://u:hunter22@h/db"})
    assert "hunter22" not in str(info.value)


@pytest.mark.parametrize(
    "line", ["retry_base_seconds = nan", "time_budget_seconds = inf", "retry_max_seconds = -inf"]
)
def test_non_finite_numbers_are_refused(tmp_path: Path, line: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[outbox]\n{line}\n")
    with pytest.raises(ConfigError, match=f"outbox.{line.split()[0]}: expected a number"):
        load_config(str(cfg), env={}).settings(OutboxSettings)


def test_a_secret_setting_is_not_echoed_when_wrong(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[canary.probes]]\nname = "r"\ntype = "redis"\nurl = ["redis://:hunter22@r"]\n')
    problems = load_config(str(cfg), env={}).problems(sections())
    assert len(problems) == 1 and "canary.probes[0].url: expected" in problems[0]
    assert "hunter22" not in problems[0]


def test_check_loads_the_job_tables_only_when_the_file_has_more_than_globals(
    tmp_path: Path,
) -> None:
    # a start without tables in its file imports no job's settings module
    calls: list[int] = []

    def tables() -> dict[str, type]:
        calls.append(1)
        return sections()

    cfg = tmp_path / "c.toml"
    cfg.write_text('state_dir = "/srv/state"\nlease_ttl_seconds = 60\n')
    load_config(str(cfg), env={}).check(tables)
    assert calls == []
    for text in ("[outbox]\nbatch_size = 5\n", "outbx = 1\n", "batch_size = 5\n"):
        cfg.write_text(text)
        lazy = load_config(str(cfg), env={}).problems(tables)
        assert lazy == load_config(str(cfg), env={}).problems(sections()), text
    assert calls == [1, 1, 1]
