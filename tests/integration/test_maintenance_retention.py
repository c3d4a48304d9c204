"""Retention: batches archived then deleted (and restorable with COPY FROM), retention_jobs
counts, resume after SIGKILL, file policies, object storage, `m10 retention show`."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from devenv.services import pg_bindir
from tests.conftest import BIN
from tests.maintenance_support import chunk_rows, task, write_config


def _old_replay_log(
    conn: psycopg.Connection[Any], n: int, *, start: int = 1, age: str = "40 days"
) -> None:
    conn.execute(
        "INSERT INTO m10_recovery.replay_log (event_id, event_type, stream, "
        "stream_entry_id, fencing_token, holder_id, enqueued_at, published_at) "
        "SELECT g, 'e', 'm10:outbox', g || '-0', 1, 'h', now(), "
        "now() - %s::interval FROM generate_series(%s::int, %s::int) g",
        (age, start, start + n - 1),
    )


def _archived_ids(conn: psycopg.Connection[Any], root: Path, policy: str) -> list[int]:
    return [
        r["id"]
        for chunk in sorted(root.rglob(f"{policy}-*.pgcopy.zst"))
        for r in chunk_rows(conn, chunk.read_bytes())
    ]


def _count(conn: psycopg.Connection[Any], sql: str) -> int:
    return conn.execute(f"SELECT count(*) AS n FROM {sql}").fetchone()["n"]


def test_tables_archived_in_batches_with_counts(
    cli: Any, conn: psycopg.Connection[Any], dsn: str, env: dict[str, str], tmp_path: Path
) -> None:
    _old_replay_log(conn, 2500)
    _old_replay_log(conn, 10, start=10001, age="1 day")
    tricky = 'back\\slash "quote"\nnewline\ttab é'
    conn.execute(
        "UPDATE m10_recovery.replay_log SET idempotency_key = %s WHERE event_id = 7", (tricky,)
    )
    conn.execute(
        "INSERT INTO m10_recovery.outbox (event_type, payload, status, published_at) "
        "VALUES ('e', '{}', 'published', now() - interval '8 days'), "
        "('e', '{}', 'pending', NULL), ('e', '{}', 'published', now())"
    )
    conn.execute(
        "INSERT INTO m10_recovery.dead_letter_archive (dl_stream, dl_entry_id, reason, "
        "reconcile_outcome, reconciled_at) VALUES "
        "('d', '1-0', 'x', 'replayed', now() - interval '100 days'), "
        "('d', '2-0', 'x', NULL, NULL)"
    )
    before = conn.execute(
        "SELECT * FROM m10_recovery.replay_log WHERE event_id <= 2500 ORDER BY id"
    ).fetchall()
    cfg = write_config(tmp_path, "[retention]\nbatch_size = 1000\n", base="")

    dry = cli("m10", "run", "retention_cleanup", "--dry-run", "--config", str(cfg))
    assert task(dry, "retention_cleanup")["summary"]["would_delete"]["replay_log"] == 2500
    assert _count(conn, "m10_recovery.replay_log") == 2510

    proc = cli("m10", "run", "retention_cleanup", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    s = task(proc, "retention_cleanup")["summary"]
    assert s["policies"]["replay_log"]["deleted"] == 2500
    assert s["longest_txn_s"] < 1
    assert _count(conn, "m10_recovery.replay_log") == 10
    assert _count(conn, "m10_recovery.outbox") == 2
    assert _count(conn, "m10_recovery.dead_letter_archive WHERE reconcile_outcome IS NULL") == 1
    assert _count(conn, "m10_recovery.dead_letter_archive") == 1
    archive = Path(env["M10_STATE_DIR"]) / "retention-archive"
    chunks = sorted(archive.rglob("replay_log-*.pgcopy.zst"))
    assert len(chunks) == 3  # 1000 + 1000 + 500
    assert sorted(_archived_ids(conn, archive, "replay_log")) == list(range(1, 2501))
    lines = [r for chunk in chunks for r in chunk_rows(conn, chunk.read_bytes())]
    assert [x["idempotency_key"] for x in lines if x["event_id"] == 7] == [tricky]
    assert sorted(lines, key=lambda r: r["id"]) == before
    # the documented restore, as an operator runs it (docs/maintenance.md): the chunk's
    # binary COPY stream piped into psql's \copy gives back exactly the rows that were
    # deleted (NULLs, timestamps, the tricky text)
    psql = str(pg_bindir() / "psql")
    for chunk in chunks:
        raw = subprocess.run(
            [str(BIN / "m10"), "retention", "show", "--binary", str(chunk)],
            env=env,
            capture_output=True,
            check=True,
        ).stdout
        restored = subprocess.run(
            [
                psql,
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                dsn,
                "-c",
                "\\copy m10_recovery.replay_log FROM STDIN (FORMAT binary)",
            ],
            input=raw,
            capture_output=True,
        )
        assert restored.returncode == 0, restored.stderr
    assert (
        conn.execute(
            "SELECT * FROM m10_recovery.replay_log WHERE event_id <= 2500 ORDER BY id"
        ).fetchall()
        == before
    )
    # a chunk whose rows are (partly) there already: through the documented staging table
    conn.execute("DELETE FROM m10_recovery.replay_log WHERE event_id > 1500 AND event_id <= 2500")
    restored = subprocess.run(
        [
            psql,
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            dsn,
            "-c",
            "CREATE TEMP TABLE s (LIKE m10_recovery.replay_log)",
            "-c",
            "\\copy s FROM STDIN (FORMAT binary)",
            "-c",
            "INSERT INTO m10_recovery.replay_log OVERRIDING SYSTEM VALUE SELECT * FROM s "
            "ON CONFLICT DO NOTHING",
        ],
        input=subprocess.run(
            [str(BIN / "m10"), "retention", "show", "--binary", str(chunks[1])],
            env=env,
            capture_output=True,
            check=True,
        ).stdout,
        capture_output=True,
    )
    assert restored.returncode == 0, restored.stderr
    assert (
        conn.execute(
            "SELECT * FROM m10_recovery.replay_log WHERE event_id <= 2000 ORDER BY id"
        ).fetchall()
        == before[:2000]
    )
    # and read as CSV (PostgreSQL's own, header line first)
    shown = cli("m10", "retention", "show", str(chunks[0]), "--config", str(cfg))
    assert shown.returncode == 0, shown.stderr
    rows = list(csv.DictReader(io.StringIO(shown.stdout, newline="")))
    assert len(rows) == 1000 and list(rows[0]) == list(before[0])
    assert [r["idempotency_key"] for r in rows if r["event_id"] == "7"] == [tricky]
    assert rows[0]["published_at"].endswith("+00") and rows[1]["idempotency_key"] == ""
    conn.execute("DELETE FROM m10_recovery.replay_log WHERE event_id <= 2500")
    jobs = {
        r["policy"]: r
        for r in conn.execute(
            "SELECT policy, status, rows_archived, rows_deleted, duration_ms, archive_location "
            "FROM m10_recovery.retention_jobs"
        )
    }
    assert jobs["replay_log"]["status"] == "succeeded"
    assert jobs["replay_log"]["rows_archived"] == jobs["replay_log"]["rows_deleted"] == 2500
    assert jobs["outbox"]["rows_deleted"] == 1 and jobs["dead_letter_archive"]["rows_deleted"] == 1
    assert jobs["replay_log"]["archive_location"].startswith(str(archive))

    hist = cli("m10", "retention", "history", "--policy", "replay_log", "--config", str(cfg))
    assert hist.returncode == 0 and "2500" in hist.stdout and "succeeded" in hist.stdout


def test_rows_to_keep_amid_old_ones(
    cli: Any, conn: psycopg.Connection[Any], env: dict[str, str], tmp_path: Path
) -> None:
    """Batches are spans of ids while every row of them was eligible; a span with rows to
    keep ends that, and every eligible row past it still goes (and none to keep)."""
    _old_replay_log(conn, 1000)
    _old_replay_log(conn, 10, start=1001, age="1 day")
    _old_replay_log(conn, 490, start=1011)
    _old_replay_log(conn, 5, start=1501, age="1 day")
    _old_replay_log(conn, 7, start=1506)
    cfg = write_config(tmp_path, "[retention]\nbatch_size = 300\n", base="")
    proc = cli("m10", "run", "retention_cleanup", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert task(proc, "retention_cleanup")["summary"]["policies"]["replay_log"]["deleted"] == 1497
    left = [
        r["event_id"]
        for r in conn.execute("SELECT event_id FROM m10_recovery.replay_log ORDER BY id")
    ]
    assert left == [*range(1001, 1011), *range(1501, 1506)]
    archive = Path(env["M10_STATE_DIR"]) / "retention-archive"
    assert sorted(_archived_ids(conn, archive, "replay_log")) == [
        *range(1, 1001),
        *range(1011, 1501),
        *range(1506, 1513),
    ]


def test_resume_after_sigkill_loses_nothing(
    conn: psycopg.Connection[Any], env: dict[str, str], tmp_path: Path
) -> None:
    total = 60000
    _old_replay_log(conn, total)
    cfg = write_config(tmp_path, "[retention]\nbatch_size = 300\n", base="")
    args = [str(BIN / "m10"), "run", "retention_cleanup", "--config", str(cfg)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while (
        time.monotonic() < deadline
        and _count(conn, "m10_recovery.retention_jobs WHERE rows_deleted > 0") == 0
    ):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = _count(conn, "m10_recovery.replay_log")
    assert 0 < left < total, "the kill should land mid-way"
    archive = Path(env["M10_STATE_DIR"]) / "retention-archive"
    present = {r["id"] for r in conn.execute("SELECT id FROM m10_recovery.replay_log")}
    assert present | set(_archived_ids(conn, archive, "replay_log")) == set(range(1, total + 1))

    conn.execute("DELETE FROM m10_recovery.distributed_locks")  # the dead holder's lease
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _count(conn, "m10_recovery.replay_log") == 0
    assert set(_archived_ids(conn, archive, "replay_log")) == set(range(1, total + 1))
    rows = conn.execute(
        "SELECT status, error, rows_deleted FROM m10_recovery.retention_jobs "
        "WHERE policy = 'replay_log' ORDER BY id"
    ).fetchall()
    assert rows[0]["status"] == "failed" and "interrupted" in rows[0]["error"]
    assert rows[1]["status"] == "succeeded"
    assert rows[0]["rows_deleted"] + rows[1]["rows_deleted"] == total


def _touch(path: Path, days_old: float, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    t = time.time() - days_old * 86400
    os.utime(path, (t, t))
    return path


def test_file_policies(
    cli: Any, conn: psycopg.Connection[Any], env: dict[str, str], tmp_path: Path
) -> None:
    state, logs = Path(env["M10_STATE_DIR"]), Path(env["M10_LOG_DIR"])
    fb = state / "fallback-uploads"
    sha = hashlib.sha256(b"x").hexdigest()
    meta = json.dumps({"bucket": "b", "key": "k/a.bin", "size": 1, "sha256": sha})
    old_up = [
        _touch(fb / "a.bin", 20),
        _touch(fb / "a.bin.meta.json", 20, meta),
        _touch(fb / "a.bin.uploaded", 20, meta),
    ]
    kept = [
        _touch(fb / "b.bin", 20),
        _touch(fb / "b.bin.meta.json", 20, meta),  # not uploaded
        _touch(fb / "c.bin", 1),
        _touch(fb / "c.bin.meta.json", 1, meta),
        _touch(fb / "c.bin.uploaded", 1, meta),  # uploaded recently
        # markers that do not verify never let retention delete the only copy
        _touch(fb / "d.bin", 20),
        _touch(fb / "d.bin.meta.json", 20, meta),
        _touch(fb / "d.bin.uploaded", 20, ""),
        _touch(fb / "e.bin", 20, "changed"),
        _touch(fb / "e.bin.meta.json", 20, meta),
        _touch(fb / "e.bin.uploaded", 20, meta),
    ]
    now = datetime.now(UTC)
    this_month = f"m10_stats_{now:%Y-%m}.csv"
    old_csv = [
        _touch(logs / "m10_stats_2020-01.csv", 1, "date,n\n2020-01-01,1\n"),
        _touch(logs / "m10_stats_2020-01.csv.processed", 1),
    ]
    kept += [_touch(logs / this_month, 1), _touch(logs / f"{this_month}.processed", 1)]
    reports = state / "canary" / "reports"
    old_reports = [_touch(reports / "report-2020.json", 40)]
    kept += [_touch(reports / "latest_report.json", 40), _touch(reports / "report-new.json", 1)]
    cfg = write_config(tmp_path, "[retention.stats_csv]\nmax_age_months = 12\n", base="")

    proc = cli("m10", "run", "retention_files", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert not any(p.exists() for p in old_up + old_csv + old_reports)
    assert all(p.exists() for p in kept)
    archive = state / "retention-archive"
    [csv_gz] = archive.rglob("m10_stats_2020-01.csv.gz")
    assert gzip.decompress(csv_gz.read_bytes()) == b"date,n\n2020-01-01,1\n"
    assert list(archive.rglob("report-2020.json.gz"))
    rows = {
        r["policy"]: r
        for r in conn.execute(
            "SELECT policy, target, rows_deleted FROM m10_recovery.retention_jobs"
        )
    }
    assert set(rows) == {"fallback_uploads", "stats_csv", "canary_reports"}  # files only
    assert rows["fallback_uploads"]["rows_deleted"] == 3
    assert rows["stats_csv"]["rows_deleted"] == 2 and rows["canary_reports"]["rows_deleted"] == 1
    assert rows["stats_csv"]["target"] == f"{socket.gethostname()}:{logs}/m10_stats_*.csv"


def test_archive_to_object_storage(
    cli: Any, conn: psycopg.Connection[Any], s3_env: dict[str, str], tmp_path: Path
) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_env["M10_R2_ENDPOINT_URL"],
        aws_access_key_id=s3_env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=s3_env.get("AWS_SECRET_ACCESS_KEY"),
        region_name=s3_env.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
    s3.create_bucket(Bucket=s3_env["M10_R2_BUCKET"])
    _old_replay_log(conn, 50)
    cfg = write_config(tmp_path, "", base="")
    proc = cli("m10", "run", "retention_cleanup", "--config", str(cfg), env=s3_env)
    assert proc.returncode == 0, proc.stderr
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_env["M10_R2_BUCKET"])["Contents"]]
    [key] = [k for k in keys if k.startswith("retention/replay_log/")]
    body = s3.get_object(Bucket=s3_env["M10_R2_BUCKET"], Key=key)["Body"].read()
    assert key.endswith(".pgcopy.zst") and len(chunk_rows(conn, body)) == 50
    assert not (Path(s3_env["M10_STATE_DIR"]) / "retention-archive").exists()


def test_dead_lettered_outbox_rows_are_purged_once_old(
    cli: Any, conn: psycopg.Connection[Any], env: dict[str, str], tmp_path: Path
) -> None:
    """The processor dead-letters (and archives) an event; retention purges dead-lettered
    outbox rows older than the policy's age, also rows from before dead_lettered_at
    existed (by created_at), and keeps recent ones and their dead_letter_archive rows."""
    from tests.outbox_support import enqueue
    from tests.outbox_support import write_config as outbox_config

    old, recent = (
        enqueue(conn, 1, payload={"blob": "x" * 500}, key_prefix=p)[0] for p in ("old", "recent")
    )
    (tmp_path / "o").mkdir()
    ocfg = outbox_config(tmp_path / "o", "[outbox]\nmax_payload_bytes = 100\n")
    proc = cli("m10-outbox-processor", "--config", str(ocfg))
    assert proc.returncode == 0, proc.stderr
    stamped = conn.execute(
        "SELECT count(*) AS n FROM m10_recovery.outbox WHERE status = "
        "'dead_lettered' AND dead_lettered_at > now() - interval '1 minute'"
    )
    assert stamped.fetchone()["n"] == 2
    conn.execute(
        "UPDATE m10_recovery.outbox SET dead_lettered_at = now() - interval '31 days' "
        "WHERE id = %s",
        (old,),
    )
    legacy = conn.execute(
        "INSERT INTO m10_recovery.outbox (event_type, payload, status, created_at) VALUES "
        "('e', '{}', 'dead_lettered', now() - interval '40 days') RETURNING id"
    ).fetchone()["id"]
    cfg = write_config(tmp_path, "[retention]\nbatch_size = 1000\n", base="")

    dry = cli("m10", "run", "retention_cleanup", "--dry-run", "--config", str(cfg))
    assert task(dry, "retention_cleanup")["summary"]["would_delete"]["outbox_dead_lettered"] == 2
    proc = cli("m10", "run", "retention_cleanup", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    s = task(proc, "retention_cleanup")["summary"]
    assert s["policies"]["outbox_dead_lettered"]["deleted"] == 2
    left = [r["id"] for r in conn.execute("SELECT id FROM m10_recovery.outbox ORDER BY id")]
    assert left == [recent]
    archive = Path(env["M10_STATE_DIR"]) / "retention-archive"
    assert sorted(_archived_ids(conn, archive, "outbox_dead_lettered")) == sorted([old, legacy])
    assert _count(conn, "m10_recovery.dead_letter_archive") == 2  # reconciled later, by policy
    job = conn.execute(
        "SELECT target, rows_deleted FROM m10_recovery.retention_jobs "
        "WHERE policy = 'outbox_dead_lettered'"
    ).fetchone()
    assert job == {"target": "m10_recovery.outbox", "rows_deleted": 2}


def test_show_refuses_a_chunk_that_is_not_whole_or_names_strange_types(
    cli: Any, conn: psycopg.Connection[Any], env: dict[str, str], tmp_path: Path
) -> None:
    """`m10 retention show` on a hostile or damaged chunk: one line, exit 65, no traceback,
    and nothing of the header reaches the database as SQL."""
    from m10jobs.jobs.maintenance.chunks import COPY_SIGNATURE, compress_chunk

    cfg = write_config(tmp_path, base="")
    empty = COPY_SIGNATURE + bytes(8) + b"\xff\xff"  # header, no rows, trailer
    marker = "m10_show_injected"

    def chunk(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    good = compress_chunk(
        empty, b'm10jobs-retention-chunk:{"table": "t", "columns": [["id", "bigint"]]}'
    )
    injected = compress_chunk(
        empty,
        json.dumps({"table": "t", "columns": [["id", f"int); CREATE TABLE {marker} (x int); --"]]})
        .encode()
        .join([b"m10jobs-retention-chunk:", b""]),
    )
    cases = {
        "garbage": chunk("a.pgcopy.zst", b"not zstd at all"),
        "truncated": chunk("b.pgcopy.zst", good[:-4]),
        "no columns": chunk("c.pgcopy.zst", compress_chunk(empty, b"")),
        "injected type": chunk("d.pgcopy.zst", injected),
        "unknown type": chunk(
            "e.pgcopy.zst",
            compress_chunk(
                empty, b'm10jobs-retention-chunk:{"table": "t", "columns": [["id", "nosuch"]]}'
            ),
        ),
        "bad gzip": chunk("f.csv.gz", b"\x1f\x8b not really"),
        "directory": tmp_path / "g.pgcopy.zst",
    }
    cases["directory"].mkdir()
    for case, path in cases.items():
        proc = cli("m10", "retention", "show", str(path), "--config", str(cfg))
        errors = [ln for ln in proc.stderr.splitlines() if '"level": "ERROR"' in ln]
        assert proc.returncode in (2, 65) if case == "directory" else proc.returncode == 65, (
            case,
            proc.returncode,
            proc.stderr,
        )
        assert "Traceback" not in proc.stderr, (case, proc.stderr)
        if case != "directory":
            assert len(errors) == 1 and path.name in errors[0], (case, proc.stderr)
    assert conn.execute("SELECT to_regclass(%s) AS t", (marker,)).fetchone()["t"] is None
    ok = cli("m10", "retention", "show", str(chunk("h.pgcopy.zst", good)), "--config", str(cfg))
    assert ok.returncode == 0 and ok.stdout == "id\n", ok.stderr
