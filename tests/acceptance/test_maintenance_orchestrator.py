"""m10-maintenance end to end: task order, exit codes, outbox leader health, dry run."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import psycopg

from tests.maintenance_support import client, deliver, event_fields, summary, task, write_config

ORDER = [
    "reclaim_gc",
    "dl_route",
    "dl_archive",
    "dl_reconcile",
    "matview_refresh",
    "retention_cleanup",
    "retention_files",
]
HOST = socket.gethostname()  # the env fixture sets no M10_HOSTNAME


def test_all_tasks_run_in_order_and_poison_travels(
    cli: Any, conn: psycopg.Connection[Any], tmp_path: Path, redis_url: str
) -> None:
    conn.execute(
        "CREATE MATERIALIZED VIEW public.mv AS SELECT 1 AS id; "
        "CREATE UNIQUE INDEX ON public.mv (id)"
    )
    r = client(redis_url)
    r.xgroup_create("m10:outbox", "workers", id="0", mkstream=True)
    r.xadd("m10:outbox", event_fields(7, "poison-key"))
    deliver(r, "m10:outbox", "workers", times=3)
    cfg = write_config(tmp_path, '[matviews]\nviews = ["public.mv"]\n')

    proc = cli("m10-maintenance", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    s = summary(proc)
    assert [t["task"] for t in s["tasks"]] == ORDER
    assert [t["lock"] for t in s["tasks"]] == [
        "reclaim_gc",
        "dl_reconcile",
        "dl_reconcile",
        "dl_reconcile",
        "matview_public.mv",
        "retention_cleanup",
        f"retention_cleanup@{HOST}",
    ]
    assert {t["status"] for t in s["tasks"]} == {"ok"}
    assert task(proc, "dl_route")["summary"]["routed"] == 1
    assert task(proc, "dl_archive")["summary"]["archived"] == 1
    assert task(proc, "dl_reconcile")["summary"]["replayed"] == 1
    health = task(proc, "reclaim_gc")["summary"]["outbox_processor"]
    assert health["lease"] == "free" and health["pending"] == 0  # measured first, in reclaim_gc
    assert (
        conn.execute("SELECT idempotency_key FROM m10_recovery.outbox").fetchone()[
            "idempotency_key"
        ]
        == "poison-key#replay1"
    )


def test_failing_task_does_not_stop_the_others(cli: Any, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, '[matviews]\nviews = ["public.missing"]\n')
    proc = cli("m10-maintenance", "--config", str(cfg))
    assert proc.returncode == 1
    status = {t["task"]: t["status"] for t in summary(proc)["tasks"]}
    assert status.pop("matview_refresh") == "failed"
    assert set(status.values()) == {"ok"} and "retention_cleanup" in status
    assert summary(proc)["exit_code"] == 1


def test_all_leases_taken_exits_75(cli: Any, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    cfg = write_config(tmp_path, '[matviews]\nviews = ["public.mv"]\n')
    for lock in (
        "reclaim_gc",
        "dl_reconcile",
        "matview_public.mv",
        "retention_cleanup",
        f"retention_cleanup@{HOST}",
    ):
        conn.execute("SELECT m10_recovery.acquire_lock(%s, 'other-host:1:x', 120)", (lock,))
    proc = cli("m10-maintenance", "--config", str(cfg))
    assert proc.returncode == 75, proc.stderr
    assert {t["status"] for t in summary(proc)["tasks"]} == {"skipped"}
    # one lease free again: that task runs, the rest are skipped, exit 0
    conn.execute("SELECT m10_recovery.force_release_lock('retention_cleanup')")
    proc = cli("m10-maintenance", "--config", str(cfg))
    assert proc.returncode == 0
    assert task(proc, "retention_cleanup")["status"] == "ok"


def test_outbox_leader_health_reported(
    cli: Any, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    cfg = write_config(tmp_path, "[maintenance]\noutbox_stale_seconds = 60\n")
    conn.execute("SELECT m10_recovery.acquire_lock('m10:outbox_processor', 'leader:1:x', 120)")
    conn.execute(
        "INSERT INTO m10_recovery.outbox (event_type, payload, created_at) "
        "VALUES ('e', '{}', now() - interval '5 minutes')"
    )
    proc = cli("m10", "run", "reclaim_gc", "--config", str(cfg))
    health = task(proc, "reclaim_gc")["summary"]["outbox_processor"]
    assert health["lease"] == "live" and health["holder"] == "leader:1:x"
    assert health["pending"] == 1 and health["oldest_pending_age_s"] >= 299
    assert health["healthy"] is False and "outbox processor looks unhealthy" in proc.stderr
    prom = (Path(tmp_path) / "metrics" / "m10_maintenance.prom").read_text()
    assert "m10_outbox_processor_lease_live" in prom and "m10_outbox_pending_events" in prom
    assert re.search(
        r'^m10_lease_held_seconds\{job="m10-maintenance",lock="m10:outbox_processor"\}'
        r" \d",
        prom,
        re.M,
    ), prom


def test_dry_run_changes_nothing(
    cli: Any, conn: psycopg.Connection[Any], tmp_path: Path, redis_url: str
) -> None:
    r = client(redis_url)
    r.xgroup_create("m10:outbox", "workers", id="0", mkstream=True)
    r.xadd("m10:outbox", event_fields(1, "k"))
    deliver(r, "m10:outbox", "workers", times=3)
    r.xadd("m10:dead_letter", {**event_fields(2, "j"), "reason": "x"})
    conn.execute(
        "INSERT INTO m10_recovery.replay_log (event_id, event_type, stream, "
        "stream_entry_id, fencing_token, holder_id, enqueued_at, published_at) VALUES "
        "(1, 'e', 's', '1-0', 1, 'h', now(), now() - interval '90 days')"
    )
    cfg = write_config(tmp_path)
    proc = cli("m10-maintenance", "--dry-run", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert task(proc, "dl_route")["summary"] == {"would_route": 1}
    assert task(proc, "dl_archive")["summary"] == {"would_archive": 1}
    assert task(proc, "retention_cleanup")["summary"]["would_delete"]["replay_log"] == 1
    assert r.xlen("m10:dead_letter") == 1
    assert len(r.xpending_range("m10:outbox", "workers", "-", "+", 10)) == 1
    assert conn.execute("SELECT count(*) AS n FROM m10_recovery.replay_log").fetchone()["n"] == 1
    assert (
        conn.execute("SELECT count(*) AS n FROM m10_recovery.retention_jobs").fetchone()["n"] == 0
    )
