"""Dead letters with a real redis-server and PostgreSQL: route, archive, reconcile, replay."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import BIN
from tests.maintenance_support import client, deliver, event_fields, task, write_config


def test_route_moves_only_entries_past_the_delivery_limit(
    cli: Any, env: dict[str, str], tmp_path: Path, redis_url: str
) -> None:
    r = client(redis_url)
    r.xgroup_create("m10:outbox", "workers", id="0", mkstream=True)
    poison = r.xadd("m10:outbox", event_fields(1, "k1"))
    acked = r.xadd("m10:outbox", event_fields(2, "k2"))
    fresh = r.xadd("m10:outbox", event_fields(3, "k3"))
    deliver(r, "m10:outbox", "workers", times=1)
    r.xack("m10:outbox", "workers", acked)
    # only the poison message is redelivered until it reaches 3 deliveries
    r.xclaim("m10:outbox", "workers", "c2", 0, [poison])
    r.xclaim("m10:outbox", "workers", "c3", 0, [poison])
    cfg = write_config(tmp_path)

    proc = cli("m10", "run", "dl_route", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert task(proc, "dl_route")["summary"]["routed"] == 1
    pending = {p["message_id"] for p in r.xpending_range("m10:outbox", "workers", "-", "+", 10)}
    assert pending == {fresh}
    [(_, fields)] = r.xrange("m10:dead_letter")
    assert fields["source_entry_id"] == poison and fields["source_stream"] == "m10:outbox"
    assert fields["attempts"] == "3" and "delivered 3 times" in fields["reason"]
    assert fields["idempotency_key"] == "k1" and fields["payload"] == '{"n": 1}'
    # a second pass finds nothing more to route
    again = cli("m10", "run", "dl_route", "--config", str(cfg))
    assert task(again, "dl_route")["summary"]["routed"] == 0


def test_sigkill_during_routing_never_loses_a_message(
    env: dict[str, str], tmp_path: Path, redis_url: str
) -> None:
    r = client(redis_url)
    r.xgroup_create("m10:outbox", "workers", id="0", mkstream=True)
    pipe = r.pipeline()
    for i in range(3000):
        pipe.xadd("m10:outbox", event_fields(i, f"k{i}"))
    ids = set(pipe.execute())
    deliver(r, "m10:outbox", "workers", times=3)
    cfg = write_config(tmp_path)

    def invariant() -> set[str]:
        pending = {
            p["message_id"] for p in r.xpending_range("m10:outbox", "workers", "-", "+", 10000)
        }
        routed = [f["source_entry_id"] for _, f in r.xrange("m10:dead_letter")]
        assert pending | set(routed) == ids, "a message was lost"
        assert len(routed) == len(set(routed)), "a message was dead-lettered twice"
        progress.append(len(routed))
        return pending

    progress: list[int] = []
    kills = 0
    for _ in range(4):
        before = r.xlen("m10:dead_letter")
        proc = subprocess.Popen(
            [str(BIN / "m10"), "run", "dl_route", "--config", str(cfg)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # kill once routing is under way, however long start-up took on a loaded machine
        deadline = time.monotonic() + 60
        while (
            proc.poll() is None
            and r.xlen("m10:dead_letter") == before
            and time.monotonic() < deadline
        ):
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        invariant()
        # the dead process's lease would lapse after its TTL: drop it now
        with psycopg.connect(env["M10_DATABASE_URL"], autocommit=True) as c:
            c.execute("DELETE FROM m10_recovery.distributed_locks")
    done = subprocess.run(
        [str(BIN / "m10"), "run", "dl_route", "--config", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert invariant() == set()
    print("routed after each kill:", progress)
    assert kills >= 1 and any(0 < n < len(ids) for n in progress), progress


def _dl(r: Any, event_id: int, key: str | None, source_entry: str, **kw: Any) -> str:
    return r.xadd(
        "m10:dead_letter",
        {
            **event_fields(event_id, key, **kw),
            "reason": "boom",
            "attempts": "5",
            "source_stream": "m10:outbox",
            "source_entry_id": source_entry,
        },
    )


def _replay_log(conn: psycopg.Connection[Any], event_id: int, key: str, entry: str) -> None:
    conn.execute(
        "INSERT INTO m10_recovery.replay_log (event_id, idempotency_key, event_type, "
        "stream, stream_entry_id, fencing_token, holder_id, enqueued_at) VALUES "
        "(%s, %s, 'order.created', 'm10:outbox', %s, 1, 'h', now())",
        (event_id, key, entry),
    )


def _archive(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT id, idempotency_key, reconcile_outcome, reconcile_attempts, "
        "replay_event_id, reconciled_at, lineage_key FROM "
        "m10_recovery.dead_letter_archive ORDER BY id"
    ).fetchall()


def test_archive_then_reconcile_three_outcomes_and_idempotent(
    cli: Any, conn: psycopg.Connection[Any], tmp_path: Path, redis_url: str
) -> None:
    r = client(redis_url)
    cfg = write_config(tmp_path)
    # processed after all: a different stream entry published the same event
    _replay_log(conn, 10, "done-key", "1-1")
    _dl(r, 10, "done-key", source_entry="1-0")
    # a plain failure: replayed
    _dl(r, 11, "retry-key", source_entry="2-0")
    # a lineage already replayed twice (cap 2): abandoned
    _dl(r, 12, "poison#replay2", source_entry="3-0")
    conn.execute(
        "INSERT INTO m10_recovery.dead_letter_archive (dl_stream, dl_entry_id, reason, "
        "idempotency_key, lineage_key, reconcile_outcome, reconcile_attempts) VALUES "
        "('m10:dead_letter', '0-1', 'x', 'poison', 'poison', 'replayed', 1), "
        "('m10:dead_letter', '0-2', 'x', 'poison#replay1', 'poison', 'replayed', 2)"
    )
    # a dead letter whose payload is not JSON cannot be replayed: abandoned
    _dl(r, 13, "bad-json", source_entry="4-0", payload="{not json")

    arch = cli("m10", "run", "dl_archive", "--config", str(cfg))
    assert arch.returncode == 0, arch.stderr
    assert task(arch, "dl_archive")["summary"]["archived"] == 4
    assert r.xlen("m10:dead_letter") == 0

    rec = cli("m10", "run", "dl_reconcile", "--config", str(cfg))
    # abandoned dead letters need an operator: never a silent 0
    assert rec.returncode == 1, rec.stderr
    assert "2 dead letter(s) are abandoned" in rec.stderr
    assert task(rec, "dl_reconcile")["summary"] == {
        "already_processed": 1,
        "replayed": 1,
        "abandoned": 2,
        "abandoned_total": 2,
    }
    assert "ABANDONED" in rec.stderr
    assert _gauge(tmp_path, "m10_dead_letters_abandoned") == 2
    rows = {row["idempotency_key"]: row for row in _archive(conn)}
    assert rows["done-key"]["reconcile_outcome"] == "already_processed"
    assert rows["done-key"]["replay_event_id"] == 10
    replayed = rows["retry-key"]
    assert replayed["reconcile_outcome"] == "replayed" and replayed["reconcile_attempts"] == 1
    outbox = conn.execute(
        "SELECT id, idempotency_key, event_type, payload FROM m10_recovery.outbox"
    ).fetchall()
    assert [(o["id"], o["idempotency_key"]) for o in outbox] == [
        (replayed["replay_event_id"], "retry-key#replay1")
    ]
    assert outbox[0]["payload"] == {"n": 1}
    assert rows["poison#replay2"]["reconcile_outcome"] == "abandoned"
    assert rows["poison#replay2"]["reconcile_attempts"] == 2
    assert rows["bad-json"]["reconcile_outcome"] == "abandoned"
    assert all(
        rows[k]["reconciled_at"] for k in ("done-key", "retry-key", "poison#replay2", "bad-json")
    )

    before = (_archive(conn), conn.execute("SELECT * FROM m10_recovery.outbox").fetchall())
    again = cli("m10", "run", "dl_reconcile", "--config", str(cfg))
    assert again.returncode == 1  # still abandoned: still failing, until replayed by hand
    assert task(again, "dl_reconcile")["summary"] == {
        "already_processed": 0,
        "replayed": 0,
        "abandoned": 0,
        "abandoned_total": 2,
    }
    assert (_archive(conn), conn.execute("SELECT * FROM m10_recovery.outbox").fetchall()) == before
    assert _gauge(tmp_path, "m10_dead_letters_abandoned") == 2  # still waiting for a human


def _gauge(tmp_path: Path, name: str) -> float:
    from m10jobs.edges.metrics import parse

    prom = (tmp_path / "metrics" / "m10_maintenance.prom").read_text()
    [value] = [g.value for g in parse(prom) if g.name == name]
    return value


def test_archive_is_idempotent_by_entry_id(
    cli: Any, conn: psycopg.Connection[Any], tmp_path: Path, redis_url: str
) -> None:
    """A crash after the commit but before XDEL: the next pass stores no duplicate."""
    r = client(redis_url)
    first = _dl(r, 20, "a", source_entry="1-0")
    _dl(r, 21, "b", source_entry="2-0")
    conn.execute(
        "INSERT INTO m10_recovery.dead_letter_archive (dl_stream, dl_entry_id, reason) "
        "VALUES ('m10:dead_letter', %s, 'boom')",
        (first,),
    )
    proc = cli("m10", "run", "dl_archive", "--config", str(write_config(tmp_path)))
    assert task(proc, "dl_archive")["summary"]["archived"] == 1
    assert (
        conn.execute("SELECT count(*) AS n FROM m10_recovery.dead_letter_archive").fetchone()["n"]
        == 2
    )
    assert r.xlen("m10:dead_letter") == 0


def test_replay_cap_across_a_lineage(
    cli: Any, conn: psycopg.Connection[Any], tmp_path: Path, redis_url: str
) -> None:
    """The same event dying again after each replay is replayed max_replays times, then
    abandoned."""
    r = client(redis_url)
    cfg = write_config(tmp_path)
    key, outcomes = "chain", []
    for i in range(3):
        _dl(r, 30 + i, key, source_entry=f"{i + 5}-0")
        proc = cli("m10-maintenance", "--config", str(cfg))
        assert proc.returncode == (1 if i == 2 else 0), proc.stderr  # 1: one abandoned
        s = task(proc, "dl_reconcile")["summary"]
        s.pop("abandoned_total", None)
        outcomes.append(next(k for k, v in s.items() if v))
        key = f"chain#replay{i + 1}"
    assert outcomes == ["replayed", "replayed", "abandoned"]
    keys = [
        o["idempotency_key"]
        for o in conn.execute("SELECT idempotency_key FROM m10_recovery.outbox ORDER BY id")
    ]
    assert keys == ["chain#replay1", "chain#replay2"]


def test_operator_list_and_manual_replay(
    cli: Any, conn: psycopg.Connection[Any], tmp_path: Path, redis_url: str
) -> None:
    r = client(redis_url)
    cfg = write_config(
        tmp_path,
        base=write_config(tmp_path).read_text().replace("max_replays = 2", "max_replays = 0"),
    )
    _dl(r, 40, "manual", source_entry="1-0")
    metrics = tmp_path / "metrics"  # the env fixture's M10_METRICS_DIR
    for _ in range(2):  # the abandoned one keeps the run failing, and its gauge set
        first = cli("m10-maintenance", "--config", str(cfg))
        assert first.returncode == 1 and "1 dead letter(s) are abandoned" in first.stderr
        assert (
            'm10_dead_letters_abandoned{job="m10-maintenance"} 1'
            in (metrics / "m10_maintenance.prom").read_text()
        )
    listed = cli("m10", "dl", "list", "--outcome", "abandoned", "--config", str(cfg))
    assert listed.returncode == 0 and "manual" in listed.stdout
    assert (
        "no dead letters match"
        in cli("m10", "dl", "list", "--outcome", "replayed", "--config", str(cfg)).stdout
    )
    by_reason = cli(
        "m10",
        "dl",
        "list",
        "--reason",
        "BOO",
        "--stream",
        "m10:outbox",
        "--json",
        "--config",
        str(cfg),
    )
    assert [json.loads(x)["idempotency_key"] for x in by_reason.stdout.splitlines()] == ["manual"]
    assert (
        "no dead letters match"
        in cli("m10", "dl", "list", "--reason", "timeout", "--config", str(cfg)).stdout
    )
    dl_id = conn.execute("SELECT id FROM m10_recovery.dead_letter_archive").fetchone()["id"]

    replay = cli("m10", "dl", "replay", str(dl_id), "--config", str(cfg))
    assert replay.returncode == 0, replay.stderr
    row = conn.execute(
        "SELECT reconcile_outcome, replay_event_id FROM m10_recovery.dead_letter_archive"
    ).fetchone()
    assert row["reconcile_outcome"] == "replayed"
    assert (
        conn.execute(
            "SELECT idempotency_key FROM m10_recovery.outbox WHERE id = %s",
            (row["replay_event_id"],),
        ).fetchone()["idempotency_key"]
        == "manual#replay1"
    )
    fixed = cli("m10-maintenance", "--config", str(cfg))
    assert fixed.returncode == 0, fixed.stderr
    assert (
        'm10_dead_letters_abandoned{job="m10-maintenance"} 0'
        in (metrics / "m10_maintenance.prom").read_text()
    )
    refused = cli("m10", "dl", "replay", str(dl_id), "--config", str(cfg))
    assert refused.returncode == 1 and "--force" in refused.stderr
    missing = cli("m10", "dl", "replay", "99999", "--config", str(cfg))
    assert missing.returncode == 65 and "Traceback" not in missing.stderr
    conn.execute("SELECT m10_recovery.acquire_lock('dl_reconcile', 'other', 60)")
    busy = cli("m10", "dl", "replay", str(dl_id), "--force", "--config", str(cfg))
    assert busy.returncode == 75


def test_bad_sources_config_exits_78(cli: Any, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, base='[dead_letter]\nsources = [{stream = "s"}]\n')
    proc = cli("m10", "run", "dl_route", "--config", str(cfg))
    assert proc.returncode == 78
    assert "dead_letter.sources[0]" in proc.stderr and "Traceback" not in proc.stderr


def test_duplicate_dead_letter_is_not_replayed_twice(
    cli: Any, conn: psycopg.Connection[Any], tmp_path: Path, redis_url: str
) -> None:
    """A writer that died between its dead-letter XADD and its ACK wrote the entry twice."""
    r = client(redis_url)
    _dl(r, 50, "twice", source_entry="9-0")
    _dl(r, 50, "twice", source_entry="9-0")
    proc = cli("m10-maintenance", "--config", str(write_config(tmp_path)))
    assert task(proc, "dl_reconcile")["summary"] == {
        "already_processed": 1,
        "replayed": 1,
        "abandoned": 0,
    }
    outbox = conn.execute("SELECT id FROM m10_recovery.outbox").fetchall()
    assert len(outbox) == 1
    rows = _archive(conn)
    assert [x["replay_event_id"] for x in rows] == [outbox[0]["id"]] * 2


def test_route_by_idle_time(cli: Any, tmp_path: Path, redis_url: str) -> None:
    r = client(redis_url)
    r.xgroup_create("m10:outbox", "workers", id="0", mkstream=True)
    stuck = r.xadd("m10:outbox", event_fields(60, "idle"))
    deliver(r, "m10:outbox", "workers", times=1)
    cfg = write_config(
        tmp_path,
        base=write_config(tmp_path)
        .read_text()
        .replace("max_idle_seconds = 0", "max_idle_seconds = 30"),
    )
    early = cli("m10", "run", "dl_route", "--config", str(cfg))
    assert task(early, "dl_route")["summary"]["routed"] == 0
    # Age the pending entry past the threshold instead of sleeping (a loaded machine's
    # start-up time must not decide the outcome); JUSTID keeps its delivery count.
    [pending] = r.xpending_range("m10:outbox", "workers", "-", "+", 1)
    r.xclaim("m10:outbox", "workers", pending["consumer"], 0, [stuck], idle=31_000, justid=True)
    late = cli("m10", "run", "dl_route", "--config", str(cfg))
    assert task(late, "dl_route")["summary"]["routed"] == 1
    [(_, fields)] = r.xrange("m10:dead_letter")
    assert fields["source_entry_id"] == stuck and "idle" in fields["reason"]
