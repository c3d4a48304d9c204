from __future__ import annotations

from pathlib import Path

import pytest

from m10jobs.config import load_config
from m10jobs.errors import ConfigError


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
    cfg.write_text('[outbox]\nbatch_size = "big"\nstreams = ["a"]\nratio = 2\n')
    section = load_config(str(cfg), env={}).section("outbox")
    with pytest.raises(ConfigError, match=r"outbox\.batch_size"):
        section.int("batch_size", 100)
    assert section.list("streams", []) == ["a"]
    assert section.float("ratio", 1.5) == 2.0
    assert section.int("missing", 7, min=1) == 7
    with pytest.raises(ConfigError, match=r"outbox\.ratio: expected an integer >= 5"):
        section.int("ratio", 10, min=5)


@pytest.mark.parametrize("env, key", [
    ({"M10_LEASE_TTL_SECONDS": "0"}, "lease_ttl_seconds"),
    ({"M10_LEASE_TTL_SECONDS": "soon"}, "lease_ttl_seconds"),
    ({"M10_DATABASE_URL": "mysql://x"}, "database_url"),
    ({"M10_R2_ENDPOINT_URL": "ftp://x"}, "r2_endpoint_url"),
])
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
