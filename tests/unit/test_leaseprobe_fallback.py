"""The lease probe is only an optimisation: on anything unexpected it answers None
(the runner then goes the driver's way, which reports the problem), never raises."""

from __future__ import annotations

import pytest

from m10jobs.edges import leaseprobe


def test_a_dsn_with_a_byte_that_is_not_utf8_is_none() -> None:
    # what os.environ holds for M10_DATABASE_URL=postgresql://u:p<0xff>@... (surrogateescape)
    dsn = "postgresql://u:p\udcff@127.0.0.1:1/db"
    assert leaseprobe.live_holders(dsn, ["m10:canary"], app="test") is None


def test_any_unforeseen_error_inside_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("an answer nobody foresaw")

    monkeypatch.setattr(leaseprobe, "_parse", broken)
    assert leaseprobe.live_holders("postgresql:///db", ["m10:canary"], app="test") is None


def test_a_stop_signal_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(leaseprobe, "_parse", interrupted)
    with pytest.raises(KeyboardInterrupt):
        leaseprobe.live_holders("postgresql:///db", ["m10:canary"], app="test")
