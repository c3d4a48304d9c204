"""The three-host test's lease analysis finds overlaps, and only real ones (no hosts needed)."""

from __future__ import annotations

from tests.system.test_three_hosts import lease_overlaps

T = "2026-01-01T00:00:{}+00:00"


def row(op: str, token: int, at: str, expires: str) -> dict[str, str]:
    return {
        "op": op,
        "lock_name": "L",
        "holder_id": "h:1:r",
        "fencing_token": str(token),
        "acquired_at": T.format("00"),
        "expires_at": T.format(expires),
        "at": T.format(at),
    }


def test_release_then_acquire_is_no_overlap() -> None:
    # acquired_at may predate the release it waited for; the row's write time does not
    assert (
        lease_overlaps(
            [
                row("insert", 1, "01", "50"),
                row("update", 1, "02", "55"),
                row("delete", 1, "03", "55"),
                row("insert", 2, "03.1", "40"),
            ]
        )
        == []
    )


def test_takeover_after_expiry_is_no_overlap() -> None:
    assert lease_overlaps([row("insert", 1, "01", "05"), row("update", 2, "06", "59")]) == []


def test_takeover_of_a_live_lease_is_an_overlap() -> None:
    assert len(lease_overlaps([row("insert", 1, "01", "30"), row("update", 2, "06", "59")])) == 1


def test_takeover_before_an_extended_expiry_is_an_overlap() -> None:
    assert (
        len(
            lease_overlaps(
                [
                    row("insert", 1, "01", "05"),
                    row("update", 1, "04", "20"),
                    row("update", 2, "10", "59"),
                ]
            )
        )
        == 1
    )
