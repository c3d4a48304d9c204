"""The outbox against Redis that restarts and fails over (real redis-server processes, a
replica and three Sentinels on loopback): nothing replay_log calls published is lost or
goes unnoticed, and a failover is followed on the next pass."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from devenv.services import Redis, RedisHA
from m10jobs.jobs.outbox.process import LINGER_POLL_S
from tests.conftest import BIN
from tests.outbox_support import enqueue, summary, write_config

SCRIPT = "m10-outbox-processor"


def published_ids(conn: Any) -> set[int]:
    return {r["event_id"] for r in conn.execute("SELECT event_id FROM m10_recovery.replay_log")}


def stream_ids(url: str, stream: str = "m10:outbox") -> list[int]:
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        return [int(f["event_id"]) for _, f in r.xrange(stream)]
    finally:
        r.close()


def last_error(stderr: str) -> str:
    errors = [json.loads(x) for x in stderr.splitlines() if '"level": "ERROR"' in x]
    return errors[-1]["message"] if errors else ""


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Redis]:
    """A redis-server of this test's own (it gets killed and restarted); no AOF."""
    server = Redis(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[RedisHA]:
    cluster = RedisHA(tmp_path / "ha").start()
    yield cluster
    cluster.stop()


def test_require_aof_refuses_a_redis_without_it(cli: Any, conn: Any, tmp_path: Path) -> None:
    enqueue(conn, 3)
    cfg = write_config(tmp_path, "[outbox]\nrequire_aof = true\n")
    proc = cli(SCRIPT, "--config", str(cfg))
    assert proc.returncode == 78, proc.stderr
    assert "does not keep what it acknowledges (no AOF)" in last_error(proc.stderr)
    assert "appendonly yes" in last_error(proc.stderr)
    assert published_ids(conn) == set()


def test_a_redis_without_aof_warns(cli: Any, conn: Any) -> None:
    enqueue(conn, 3)
    proc = cli(SCRIPT)
    assert proc.returncode == 0, proc.stderr
    assert "does not keep what it acknowledges" in proc.stderr


def test_restart_without_aof_is_reconciled_once(
    cli: Any, conn: Any, env: dict[str, str], own_redis: Redis, tmp_path: Path
) -> None:
    env = {**env, "M10_REDIS_URL": own_redis.url}
    ids = enqueue(conn, 120)
    first = cli(SCRIPT, env=env)
    assert first.returncode == 0, first.stderr
    assert sorted(stream_ids(own_redis.url)) == ids

    own_redis.restart()  # no AOF, no RDB: every acknowledged event is gone
    assert stream_ids(own_redis.url) == []
    more = enqueue(conn, 5)

    second = cli(SCRIPT, env=env)
    assert second.returncode == 1, second.stderr
    s = summary(second.stdout)
    assert (s["republished"], s["published"]) == (120, 5)
    assert "120 of the 120 events published" in second.stderr
    assert sorted(stream_ids(own_redis.url)) == ids + more
    metrics = (Path(env["M10_METRICS_DIR"]) / "m10_outbox_processor.prom").read_text()
    assert re.search(r"^m10_outbox_republished(\{[^}]*\})? 120$", metrics, re.M), metrics
    # replay_log and the outbox name the entries the stream has now
    rows = conn.execute(
        "SELECT r.stream_entry_id AS r, o.stream_entry_id AS o FROM m10_recovery.replay_log r "
        "JOIN m10_recovery.outbox o ON o.id = r.event_id"
    ).fetchall()
    r = redis.Redis.from_url(own_redis.url, decode_responses=True)
    assert {x["r"] for x in rows} == {eid for eid, _ in r.xrange("m10:outbox")}
    assert all(x["r"] == x["o"] for x in rows)

    third = cli(SCRIPT, env=env)  # exit 1 once, then quiet
    assert third.returncode == 0, third.stderr
    assert summary(third.stdout)["republished"] == 0
    assert len(stream_ids(own_redis.url)) == 125


@pytest.mark.slow
def test_lagging_replica_promoted_with_wait_loses_nothing(
    cli: Any, conn: Any, env: dict[str, str], ha: RedisHA, tmp_path: Path
) -> None:
    waited = write_config(
        tmp_path, "[outbox]\nmin_replicas = 1\nreplica_timeout_ms = 300\nbatch_size = 50\n"
    )
    env = {**env, "M10_REDIS_URL": ha.primary.url}
    first_ids = enqueue(conn, 100)
    first = cli(SCRIPT, "--config", str(waited), env=env)
    assert first.returncode == 0, first.stderr
    assert published_ids(conn) == set(first_ids)

    ha.replica.pause()  # connected, but it lags from here on (SIGSTOP)
    lagged = enqueue(conn, 100)
    second = cli(SCRIPT, "--config", str(waited), env=env)
    assert second.returncode == 69, second.stderr
    assert "0 of 1 replica(s) acknowledged within 300 ms" in last_error(second.stderr)
    assert published_ids(conn) == set(first_ids)  # appended to the primary, not acknowledged
    assert len(stream_ids(ha.primary.url)) == 150  # the first unacknowledged batch

    ha.cut_replication()  # ... and then loses its link for good
    ha.replica.resume()
    third = cli(SCRIPT, "--config", str(waited), env=env)
    assert third.returncode == 69, third.stderr
    assert "has 0 connected replica(s), outbox.min_replicas is 1" in last_error(third.stderr)
    assert published_ids(conn) == set(first_ids)

    ha.promote_replica()  # the primary dies; the replica that missed those writes takes over
    new_primary = ha.primary.url
    assert published_ids(conn) <= set(stream_ids(new_primary))  # 0 acknowledged events lost

    # after the failover (no replica left: the unwaited config) the pending ones go out
    # once; nothing was lost, so nothing is reconciled
    last = cli(SCRIPT, env={**env, "M10_REDIS_URL": new_primary})
    assert last.returncode == 0, last.stderr
    assert summary(last.stdout)["republished"] == 0
    assert sorted(stream_ids(new_primary)) == first_ids + lagged


@pytest.mark.slow
def test_lagging_replica_promoted_without_wait_is_reconciled(
    cli: Any, conn: Any, env: dict[str, str], ha: RedisHA
) -> None:
    """The same cut without WAIT: acknowledged events are lost, and the next pass says
    so and appends them again (the test above can fail: this is what WAIT prevents)."""
    env = {**env, "M10_REDIS_URL": ha.primary.url}
    ha.cut_replication()
    ids = enqueue(conn, 80)
    assert cli(SCRIPT, env=env).returncode == 0
    ha.promote_replica()
    assert set(stream_ids(ha.primary.url)) == set()  # the promoted replica never had them
    proc = cli(SCRIPT, env={**env, "M10_REDIS_URL": ha.primary.url})
    assert proc.returncode == 1, proc.stderr
    assert summary(proc.stdout)["republished"] == 80
    assert sorted(stream_ids(ha.primary.url)) == ids


@pytest.mark.slow
def test_sentinel_failover_is_followed_on_the_next_pass(
    cli: Any, conn: Any, env: dict[str, str], ha: RedisHA
) -> None:
    env = {**env, "M10_REDIS_URL": ha.url}
    before = enqueue(conn, 40)
    first = cli(SCRIPT, env=env)
    assert first.returncode == 0, first.stderr
    old = ha.primary.port
    assert sorted(stream_ids(ha.primary.url)) == before

    ha.failover()
    assert ha.primary.port != old
    after = enqueue(conn, 40)
    second = cli(SCRIPT, env=env)  # the same URL: Sentinel names the new primary
    assert second.returncode == 0, second.stderr
    assert summary(second.stdout)["republished"] == 0
    assert sorted(stream_ids(ha.primary.url)) == before + after

    status = subprocess.run(
        [str(BIN / "m10"), "status", "--json"], env=env, capture_output=True, text=True
    )
    redis_section = json.loads(status.stdout)["redis"]
    assert (
        redis_section["role"] == "master"
        and redis_section["address"] == f"127.0.0.1:{ha.primary.port}"
    )


def test_lingering_pass_reports_redis_down_within_one_tick(
    conn: Any, env: dict[str, str], own_redis: Redis, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path, "[outbox]\nlinger_seconds = 60\n")
    proc = subprocess.Popen(
        [str(BIN / SCRIPT), "--linger", "--config", str(cfg)],
        env={**env, "M10_REDIS_URL": own_redis.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2.0)  # started, drained nothing, lingering
        assert proc.poll() is None
        own_redis.kill()
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=LINGER_POLL_S + 10)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 69, err
    assert took <= LINGER_POLL_S + 2
    assert "unreachable" in last_error(err) and len(last_error(err).splitlines()) == 1
