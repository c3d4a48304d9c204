"""Lease states for tests, made explicit by the database clock.

A test that wants a lapsed lease expires it by SQL instead of taking a 1-2 s TTL and
sleeping past it: on a busy machine a short TTL can lapse before the holder's first
fenced statement (a flake), and the sleep is time the suite spends doing nothing.
Short TTLs stay only where the TTL itself is what a test is about."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg


def expire_lease(conn: psycopg.Connection[Any], name: str) -> None:
    """Let `name`'s lease lapse now, by the database clock (as if its TTL had run out)."""
    n = conn.execute(
        "UPDATE m10_recovery.distributed_locks"
        " SET acquired_at = least(acquired_at, clock_timestamp() - interval '1 hour'),"
        "     expires_at = clock_timestamp() - interval '1 millisecond'"
        " WHERE lock_name = %s",
        (name,),
    ).rowcount
    assert n == 1, f"no lease {name!r} to expire"


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll cond until it holds; the timeout only turns a regression into a failure."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def wait_lapsed(conn: psycopg.Connection[Any], name: str, timeout: float = 60.0) -> None:
    """Wait until `name`'s lease has lapsed by the database clock (its TTL is the subject)."""
    wait_until(
        lambda: conn.execute(
            "SELECT expires_at <= clock_timestamp() AS lapsed"
            " FROM m10_recovery.distributed_locks WHERE lock_name = %s",
            (name,),
        ).fetchone()["lapsed"],
        f"lease {name!r} to lapse",
        timeout,
    )


def expire_leases(conn: psycopg.Connection[Any]) -> int:
    """Let every live lease lapse now (a killed holder's, which it may or may not have
    taken yet); how many there were."""
    return conn.execute(
        "UPDATE m10_recovery.distributed_locks"
        " SET acquired_at = least(acquired_at, clock_timestamp() - interval '1 hour'),"
        "     expires_at = clock_timestamp() - interval '1 millisecond'"
        " WHERE expires_at > clock_timestamp()"
    ).rowcount
