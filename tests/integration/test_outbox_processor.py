"""m10-outbox-processor against real PostgreSQL and redis-server, run as systemd would."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from devenv.services import free_port
from m10jobs.config import load_config
from m10jobs.edges.lease import Lease
from m10jobs.edges.outbox_stream import OUTBOX_FIELDS
from m10jobs.errors import LeaseLost
from m10jobs.jobs.outbox import process as outbox_processor
from m10jobs.jobs.outbox.settings import LOCK as OUTBOX_LOCK
from m10jobs.registry import by_script
from m10jobs.runner import PassContext
from tests.outbox_support import enqueue, entries, summary, write_config

SCRIPT = "m10-outbox-processor"


def published_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'published') AS published, "
        "count(*) FILTER (WHERE status = 'pending') AS pending, "
        "count(*) FILTER (WHERE status = 'dead_lettered') AS dead, "
        "(SELECT count(*) FROM m10_recovery.replay_log) AS replayed "
        "FROM m10_recovery.outbox"
    ).fetchone()


def test_drains_into_stream_with_a5_fields_and_replay_log(
    cli: Any, conn: Any, redis_url: str
) -> None:
    ids = enqueue(conn, 30, aggregate=("order", "7"), key_prefix="k")
    proc = cli(SCRIPT)
    assert proc.returncode == 0, proc.stderr
    s = summary(proc.stdout)
    assert (s["published"], s["backlog"], s["dead_lettered"]) == (30, 0, 0)
    got = entries(redis_url, "m10:outbox")
    assert [int(e["event_id"]) for e in got] == ids
    assert set(got[0]) - {"_id"} == set(OUTBOX_FIELDS)
    assert got[0]["idempotency_key"] == "k:0" and json.loads(got[0]["payload"]) == {"i": 0}
    assert got[0]["aggregate_type"] == "order" and got[0]["created_at"].endswith("Z")
    rows = conn.execute(
        "SELECT event_id, stream, stream_entry_id, fencing_token "
        "FROM m10_recovery.replay_log ORDER BY event_id"
    ).fetchall()
    assert [(r["event_id"], r["stream_entry_id"]) for r in rows] == [
        (int(e["event_id"]), e["_id"]) for e in got
    ]
    assert all(r["fencing_token"] is not None for r in rows)
    # A second pass has nothing to do.
    again = cli(SCRIPT)
    assert again.returncode == 0 and summary(again.stdout)["published"] == 0
    assert len(entries(redis_url, "m10:outbox")) == 30


def test_routes_event_types_to_their_streams(
    cli: Any, conn: Any, redis_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    cfg = write_config(tmp_path, '[outbox.routes]\n"order.created" = "m10:orders"\n')
    enqueue(conn, 2, event_type="order.created")
    enqueue(conn, 1)
    proc = cli(SCRIPT, "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert len(entries(redis_url, "m10:orders")) == 2
    assert len(entries(redis_url, "m10:outbox")) == 1


@pytest.mark.parametrize(
    "toml, key",
    [
        ('[outbox.routes]\n"a.b" = ""\n', "outbox.routes.a.b"),
        ('[outbox]\nroutes = "m10:x"\n', "outbox.routes"),
        ("[outbox]\nbatch_size = 0\n", "outbox.batch_size"),
        ("[outbox]\ntrim_maxlen = 10\ntrim_minid_seconds = 60\n", "outbox.trim_maxlen"),
    ],
)
def test_malformed_config_exits_78_naming_the_key(
    cli: Any, conn: Any, tmp_path: Path, toml: str, key: str
) -> None:
    enqueue(conn, 1)
    proc = cli(SCRIPT, "--config", str(write_config(tmp_path, toml)))
    assert proc.returncode == 78, proc.stderr
    assert key in proc.stderr and "Traceback" not in proc.stderr
    assert published_counts(conn)["pending"] == 1


def test_redis_unreachable_exits_69_and_marks_nothing(
    cli: Any, conn: Any, env: dict[str, str]
) -> None:
    enqueue(conn, 5)
    proc = cli(SCRIPT, env={**env, "M10_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert proc.returncode == 69, proc.stderr
    assert "Redis" in proc.stderr and "Traceback" not in proc.stderr
    assert published_counts(conn) == {"published": 0, "pending": 5, "dead": 0, "replayed": 0}


def test_order_per_aggregate_under_a_poison_event(
    cli: Any, conn: Any, redis_url: str, tmp_path: Path
) -> None:
    """A failing event holds back its own aggregate only; after max_attempts it is
    dead-lettered and the held-back events follow, in id order."""
    redis.Redis.from_url(redis_url).set("m10:not-a-stream", "x")
    cfg = write_config(
        tmp_path,
        "[outbox]\nmax_attempts = 3\nretry_base_seconds = 0\n"
        '[outbox.routes]\npoison = "m10:not-a-stream"\n',
    )
    poison = enqueue(conn, 1, event_type="poison", aggregate=("order", "A"))
    later_a = enqueue(conn, 2, aggregate=("order", "A"))
    other = enqueue(conn, 2, aggregate=("order", "B"))
    first = cli(SCRIPT, "--config", str(cfg))
    assert first.returncode == 0, first.stderr
    s = summary(first.stdout)
    assert (s["published"], s["retried"], s["held_back"], s["backlog"]) == (2, 1, 2, 3)
    assert [int(e["event_id"]) for e in entries(redis_url, "m10:outbox")] == other
    assert cli(SCRIPT, "--config", str(cfg)).returncode == 0
    third = cli(SCRIPT, "--config", str(cfg))
    s = summary(third.stdout)
    assert (s["dead_lettered"], s["published"], s["backlog"]) == (1, 2, 0), s
    assert [int(e["event_id"]) for e in entries(redis_url, "m10:outbox")] == other + later_a
    dl = entries(redis_url, "m10:dead_letter")
    assert len(dl) == 1 and int(dl[0]["event_id"]) == poison[0]
    assert set(dl[0]) - {"_id"} == {*OUTBOX_FIELDS, "reason", "attempts"}
    assert dl[0]["attempts"] == "3" and "WRONGTYPE" in dl[0]["reason"]
    row = conn.execute("SELECT * FROM m10_recovery.dead_letter_archive").fetchone()
    assert (row["event_id"], row["dl_entry_id"], row["delivery_count"]) == (
        poison[0],
        dl[0]["_id"],
        3,
    )
    assert row["source_stream"] == "m10:not-a-stream" and "WRONGTYPE" in row["reason"]
    assert row["fields"]["reason"] == row["reason"]


def test_oversize_payload_is_dead_lettered_at_once(
    cli: Any, conn: Any, redis_url: str, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path, "[outbox]\nmax_payload_bytes = 100\n")
    big = enqueue(conn, 1, payload={"blob": "x" * 500}, key_prefix="big")
    small = enqueue(conn, 1)
    proc = cli(SCRIPT, "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert (summary(proc.stdout)["dead_lettered"], summary(proc.stdout)["published"]) == (1, 1)
    assert [int(e["event_id"]) for e in entries(redis_url, "m10:outbox")] == small
    row = conn.execute(
        "SELECT event_id, idempotency_key, payload, reason, refusal, fields "
        "FROM m10_recovery.dead_letter_archive"
    ).fetchone()
    assert (row["event_id"], row["idempotency_key"]) == (big[0], "big:0")
    # a bounded record, never the payload: it stays in the outbox row (event_id)
    text = json.dumps({"blob": "x" * 500})
    assert row["payload"] is None and row["refusal"] == "size"
    assert "payload" not in row["fields"] and row["fields"]["refusal"] == "size"
    assert row["fields"]["payload_bytes"] == str(len(text))
    assert row["fields"]["payload_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert row["fields"]["payload_preview"] == text[:256]
    assert "max_payload_bytes" in row["reason"]
    [dl] = entries(redis_url, "m10:dead_letter")
    assert "payload" not in dl and dl["payload_bytes"] == str(len(text))
    assert dl["event_id"] == str(big[0]) and dl["refusal"] == "size"


def test_stream_is_trimmed_by_maxlen(cli: Any, conn: Any, redis_url: str, tmp_path: Path) -> None:
    from tests.outbox_support import bulk_enqueue

    bulk_enqueue(conn, 3000)
    cfg = write_config(tmp_path, "[outbox]\ntrim_maxlen = 500\n")
    assert cli(SCRIPT, "--config", str(cfg)).returncode == 0
    length = redis.Redis.from_url(redis_url).xlen("m10:outbox")
    assert 500 <= length < 1500  # approximate trimming (~): whole macro nodes go


def _ctx(dsn: str, redis_url: str, lease: Lease, conn: Any) -> PassContext:
    config = load_config(None, {"database_url": dsn, "redis_url": redis_url}, env={})
    job = by_script(SCRIPT)
    return PassContext(
        job,
        job.tasks[0],
        None,
        job.lock or "",
        config,
        logging.getLogger("test"),
        "r1",
        False,
        {},
        conn,
        lease,
    )


def test_lapsed_leader_cannot_commit_and_successor_publishes_nothing_twice(
    cli: Any, dsn: str, conn: Any, redis_url: str
) -> None:
    """The old leader appended its batch but its commit is refused by the fence; the
    next leader finds those entries by their dedup keys instead of appending again."""
    ids = enqueue(conn, 20)
    lease = Lease(dsn, conn, OUTBOX_LOCK, "old-host:1:r1", 60)
    lease.acquire()
    conn.execute(
        "UPDATE m10_recovery.distributed_locks SET expires_at = clock_timestamp() "
        "WHERE lock_name = %s",
        (OUTBOX_LOCK,),
    )
    with pytest.raises(LeaseLost):
        from m10jobs.edges import db

        with db.translated(dsn):
            outbox_processor.process(_ctx(dsn, redis_url, lease, conn))
    assert len(entries(redis_url, "m10:outbox")) == 20  # appended before the commit ...
    assert published_counts(conn)["published"] == 0  # ... which was refused
    proc = cli(SCRIPT)
    assert proc.returncode == 0, proc.stderr
    s = summary(proc.stdout)
    assert (s["published"], s["recovered"]) == (0, 20)
    assert [int(e["event_id"]) for e in entries(redis_url, "m10:outbox")] == ids
    assert published_counts(conn) == {"published": 20, "pending": 0, "dead": 0, "replayed": 20}


def test_dry_run_publishes_nothing(cli: Any, conn: Any, redis_url: str) -> None:
    enqueue(conn, 3)
    proc = cli(SCRIPT, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert summary(proc.stdout)["would_publish_first_batch"] == 3
    assert entries(redis_url, "m10:outbox") == []
    assert published_counts(conn)["pending"] == 3


def test_time_budget_ends_the_pass_with_a_backlog(cli: Any, conn: Any, tmp_path: Path) -> None:
    from tests.outbox_support import bulk_enqueue

    bulk_enqueue(conn, 9_000)  # below 10,000: the backlog is an exact count
    # one event a batch: 9,000 round trips to PostgreSQL and Redis each take longer than the
    # 1 s budget on any machine (at 20 a batch a quiet machine drained it all within it)
    cfg = write_config(tmp_path, "[outbox]\ntime_budget_seconds = 1\nbatch_size = 1\n")
    proc = cli(SCRIPT, "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    s = summary(proc.stdout)
    assert s["budget_exhausted"] is True and s["backlog"] > 0
    assert s["published"] + s["backlog"] == 9_000 and s["oldest_pending_age_s"] > 0


def test_non_ascii_payload_arrives_byte_exact(cli: Any, conn: Any, redis_url: str) -> None:
    payload = {"name": "Zoë 😀 \u4e2d\u6587", "quote": 'a "b" \\ c\nd'}
    enqueue(conn, 1, payload=payload, key_prefix="ü")
    assert cli(SCRIPT).returncode == 0
    got = entries(redis_url, "m10:outbox")[0]
    assert json.loads(got["payload"]) == payload and got["idempotency_key"] == "ü:0"
