"""The Redis URL forms every Redis user accepts (edges/streams.py), and their secrets."""

from __future__ import annotations

import pytest

from m10jobs.config import load_config
from m10jobs.edges import streams
from m10jobs.errors import ConfigError
from m10jobs.redact import redact

URL = "redis+sentinel://:s3cret-pw@h1:26379,h2,[::1]:26380/mymaster/2?sentinel_password=sent-pw"


def test_sentinel_url_is_parsed() -> None:
    s = streams.parse_sentinel(URL)
    assert s.sentinels == (("h1", 26379), ("h2", 26379), ("::1", 26380))
    assert (s.service, s.db, s.password, s.sentinel_password) == (
        "mymaster",
        2,
        "s3cret-pw",
        "sent-pw",
    )
    assert (
        streams.describe(URL) == "primary 'mymaster' of Sentinel h1:26379,h2:26379,::1:26380 db 2"
    )


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h1:26379",  # no service
        "redis+sentinel://h1:x/mymaster",
        "redis+sentinel://h1/mymaster/zero",
        "redis+sentinel://h1/mymaster/0?color=red",
    ],
)
def test_bad_sentinel_url_is_78(url: str) -> None:
    with pytest.raises(ConfigError, match="not a valid Redis URL"):
        streams.check_url(url)


def test_config_accepts_sentinel_and_masks_both_passwords() -> None:
    config = load_config(None, env={"M10_REDIS_URL": URL, "M10_CONFIG": ""})
    assert config.redis_url == URL
    line = redact(f"connecting to {URL} failed")
    assert "s3cret-pw" not in line and "sent-pw" not in line


def test_client_is_bound_to_the_sentinel_service() -> None:
    import redis.sentinel

    r = streams.client(URL)
    assert isinstance(r.connection_pool, redis.sentinel.SentinelConnectionPool)
    assert r.connection_pool.service_name == "mymaster"
