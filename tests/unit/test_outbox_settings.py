"""OutboxSettings: defaults, validation naming the key, backoff bounds, order keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from m10jobs.config import load_config
from m10jobs.errors import ConfigError
from m10jobs.jobs.outbox.process import order_key
from m10jobs.jobs.outbox.settings import OutboxSettings


def settings(tmp_path: Path, toml: str) -> OutboxSettings:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    return load_config(str(path), env={}).settings(OutboxSettings)


def test_defaults_and_routes(tmp_path: Path) -> None:
    s = settings(tmp_path, '[outbox.routes]\n"order.created" = "orders"\n')
    assert s.stream_for("order.created") == "orders"
    assert s.stream_for("anything.else") == "m10:outbox"
    assert (s.dead_letter_stream, s.batch_size) == ("m10:dead_letter", 1000)


@pytest.mark.parametrize(
    "toml, key",
    [
        ("[outbox]\nmax_attempts = 0\n", "outbox.max_attempts"),
        ("[outbox]\nretry_base_seconds = -1\n", "outbox.retry_base_seconds"),
        ("[outbox.routes]\nx = 3\n", "outbox.routes.x"),
        ('[outbox]\ndead_letter_stream = "m10:outbox"\n', "outbox.dead_letter_stream"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        settings(tmp_path, toml)


def test_backoff_grows_is_jittered_and_capped(tmp_path: Path) -> None:
    s = settings(tmp_path, "[outbox]\nretry_base_seconds = 2\nretry_max_seconds = 60\n")
    first = [s.retry_delay(0) for _ in range(200)]
    assert all(1 <= d <= 2 for d in first) and len(set(first)) > 100
    assert all(4 <= s.retry_delay(2) <= 8 for _ in range(50))
    assert all(30 <= s.retry_delay(40) <= 60 for _ in range(50))


def test_budget_stays_below_the_lease_ttl(tmp_path: Path) -> None:
    s = settings(tmp_path, "")
    assert s.budget(lease_ttl=300, job_timeout=240) == 200
    assert s.budget(lease_ttl=10, job_timeout=240) == 8


def test_order_key_needs_an_aggregate_id() -> None:
    assert order_key({"aggregate_type": None, "aggregate_id": None}) == ""
    assert order_key({"aggregate_type": None, "aggregate_id": "1"}) != order_key(
        {"aggregate_type": "o", "aggregate_id": "1"}
    )


def test_linger_is_on_by_default_and_at_least_a_second(tmp_path: Path) -> None:
    """The unit passes --linger; the setting says how long.  0 would make the restarting
    unit start a pass per start-up (the default start limit is off for it)."""
    s = settings(tmp_path, "")
    assert s.linger_seconds == 115.0
    assert s.linger_seconds < s.budget(lease_ttl=300, job_timeout=240)  # fits one pass
    assert settings(tmp_path, "[outbox]\nlinger_seconds = 2\n").linger_seconds == 2.0
    with pytest.raises(ConfigError, match="linger_seconds"):
        settings(tmp_path, "[outbox]\nlinger_seconds = 0\n")
