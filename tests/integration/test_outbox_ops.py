"""m10-synthetic-traffic and `m10 outbox status|problems|retry`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import redis

from tests.outbox_support import enqueue, entries, summary, write_config


def test_synthetic_round_trip_is_counted(
    cli: Any, conn: Any, redis_url: str, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path, "[synthetic_traffic]\ncount = 4\n")
    first = cli("m10-synthetic-traffic", "--config", str(cfg))
    assert first.returncode == 0, first.stderr
    assert summary(first.stdout)["enqueued"] == 4 and summary(first.stdout)["checked"] == 0
    assert "4 event(s) enqueued" in first.stderr  # the event count in the journal
    rows = conn.execute(
        "SELECT payload, aggregate_type FROM m10_recovery.outbox WHERE event_type = 'm10.synthetic'"
    ).fetchall()
    assert len(rows) == 4 and all(
        r["payload"]["synthetic"] is True and "sent_at" in r["payload"] for r in rows
    )
    assert cli("m10-outbox-processor").returncode == 0
    second = cli("m10-synthetic-traffic", "--config", str(cfg))
    assert second.returncode == 0, second.stderr
    s = summary(second.stdout)
    assert (s["checked"], s["arrived"], s["stalled"], s["missing_in_stream"]) == (4, 4, 0, 0)
    assert s["latency_max_s"] is not None and s["latency_max_s"] >= 0
    assert (
        sum(1 for e in entries(redis_url, "m10:outbox") if e["event_type"] == "m10.synthetic") == 4
    )


def test_synthetic_detects_a_stall(cli: Any, conn: Any, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "[synthetic_traffic]\ncount = 2\nstall_seconds = 1\n")
    assert cli("m10-synthetic-traffic", "--config", str(cfg)).returncode == 0
    time.sleep(1.3)  # no processor ran: the events are still pending
    proc = cli("m10-synthetic-traffic", "--config", str(cfg))
    assert proc.returncode == 1, proc.stderr
    assert "stalled" in proc.stderr and "Traceback" not in proc.stderr


def test_synthetic_detects_events_missing_from_the_stream(
    cli: Any, conn: Any, redis_url: str
) -> None:
    assert cli("m10-synthetic-traffic").returncode == 0
    assert cli("m10-outbox-processor").returncode == 0
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    last = client.xrevrange("m10:outbox", count=1)[0][0]
    client.xdel("m10:outbox", last)
    proc = cli("m10-synthetic-traffic")
    assert proc.returncode == 1 and "missing from their stream" in proc.stderr


def test_status_and_retry_by_hand(cli: Any, conn: Any, redis_url: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "[outbox]\nmax_payload_bytes = 50\n")
    big = enqueue(conn, 1, payload={"blob": "x" * 100})[0]
    ok = enqueue(conn, 1)[0]
    enqueue(conn, 1)
    conn.execute("UPDATE m10_recovery.outbox SET status = 'published' WHERE id = %s", (ok,))
    status = cli("m10", "outbox", "status", "--json")
    assert status.returncode == 0, status.stderr
    before = json.loads(status.stdout)
    assert (before["backlog"], before["dead_lettered"], before["leader"]) == (2, 0, None)
    assert cli("m10-outbox-processor", "--config", str(cfg)).returncode == 0
    after = json.loads(cli("m10", "outbox", "status", "--json").stdout)
    assert (after["backlog"], after["dead_lettered"]) == (0, 1)
    assert after["dead_letters_unreconciled"] == 1
    text = cli("m10", "outbox", "status").stdout
    assert "backlog" in text and "dead-lettered" in text
    problems = cli("m10", "outbox", "problems").stdout
    assert str(big) in problems and "max_payload_bytes" in problems

    retried = cli("m10", "outbox", "retry", str(big))
    assert retried.returncode == 0, retried.stderr
    row = conn.execute(
        "SELECT status, attempts FROM m10_recovery.outbox WHERE id = %s", (big,)
    ).fetchone()
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert cli("m10-outbox-processor").returncode == 0  # default size limit: it fits now
    assert big in [int(e["event_id"]) for e in entries(redis_url, "m10:outbox")]

    published = cli("m10", "outbox", "retry", str(big))
    assert published.returncode == 65 and "already published" in published.stderr
    missing = cli("m10", "outbox", "retry", "999999")
    assert missing.returncode == 65 and "does not exist" in missing.stderr


def test_synthetic_dry_run_enqueues_nothing(cli: Any, conn: Any) -> None:
    proc = cli("m10-synthetic-traffic", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert summary(proc.stdout)["would_enqueue"] == 10
    assert conn.execute("SELECT count(*) AS n FROM m10_recovery.outbox").fetchone()["n"] == 0


def test_status_shows_the_live_leader(cli: Any, conn: Any) -> None:
    conn.execute("SELECT m10_recovery.acquire_lock('m10:outbox_processor', 'host-a:1:r', 60)")
    report = json.loads(cli("m10", "outbox", "status", "--json").stdout)
    assert report["leader"] == "host-a:1:r" and 0 < report["lease_expires_in_s"] <= 60


def test_synthetic_stall_older_than_the_lookback_is_still_seen(
    cli: Any, conn: Any, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path, "[synthetic_traffic]\ncount = 1\nlookback_seconds = 60\n")
    assert cli("m10-synthetic-traffic", "--config", str(cfg)).returncode == 0
    conn.execute("UPDATE m10_recovery.outbox SET created_at = now() - interval '1 day'")
    proc = cli("m10-synthetic-traffic", "--config", str(cfg))
    assert proc.returncode == 1 and "stalled" in proc.stderr


def test_backlog_counts_are_exact_to_10000_then_the_index_estimate(conn: Any) -> None:
    """A million-event backlog must not cost a full count every pass: above 10,000 the
    backlog comes from outbox_pending_idx's row count (fresh after VACUUM)."""
    from m10jobs.edges.queries import query
    from tests.outbox_support import bulk_enqueue

    bulk_enqueue(conn, 12_000)
    conn.execute("VACUUM ANALYZE m10_recovery.outbox")
    row = conn.execute(query("outbox_backlog")).fetchone()
    assert row["backlog"] == 12_000
    health = conn.execute(query("outbox_leader_health"), {"name": "x"}).fetchone()
    assert health["pending"] == 12_000
    conn.execute("UPDATE m10_recovery.outbox SET status = 'published' WHERE id > 9000")
    row = conn.execute(query("outbox_backlog")).fetchone()
    assert row["backlog"] == 9000  # below the cap: exact again, no VACUUM needed
    assert conn.execute(query("canary_outbox_backlog")).fetchone()["pending"] == 9000
