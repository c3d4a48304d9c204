"""Retention on several hosts (own state/log dirs and M10_HOSTNAME, one database), each
running m10-maintenance as a real process: table retention is cluster-wide (lease
`retention_cleanup`), file retention is host-local (lease `retention_cleanup@<host>`), so a
host's old files go on its own run even while another host holds the cluster lease."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg

from m10jobs.edges import fallback
from tests.conftest import BIN
from tests.maintenance_support import chunk_rows, summary, write_config

HOSTS = ("a", "b")


def _host_env(env: dict[str, str], tmp_path: Path, name: str) -> dict[str, str]:
    return {
        **env,
        "M10_HOSTNAME": name,
        "M10_STATE_DIR": str(tmp_path / name / "state"),
        "M10_LOG_DIR": str(tmp_path / name / "log"),
        "M10_METRICS_DIR": str(tmp_path / name / "metrics"),
    }


def _touch(path: Path, days_old: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(path.name)
    t = time.time() - days_old * 86400
    os.utime(path, (t, t))
    return path


def _uploaded_group(path: Path, days_old: float) -> list[Path]:
    """A fallback file, its meta and a `.uploaded` marker that verifies (retention
    deletes a fallback file only behind one)."""
    data = path.name.encode()
    entry = fallback.Entry(path)
    meta = {
        "schema_version": fallback.SCHEMA_VERSION,
        "name": path.name,
        "bucket": "b",
        "key": f"k/{path.name}",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_type": "application/octet-stream",
        "first_failure": fallback.now_iso(),
        "last_attempt": fallback.now_iso(),
        "attempts": 1,
        "last_error": "test",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    entry.meta_path.write_text(json.dumps(meta))
    fallback.mark_uploaded(entry, meta, etag="test")
    group = [path, entry.meta_path, entry.uploaded_path]
    t = time.time() - days_old * 86400
    for p in group:
        os.utime(p, (t, t))
    return group


def _old_files(env: dict[str, str], tag: str) -> list[Path]:
    """One old group of each file policy: uploaded fallback file, stats month, report."""
    state, logs = Path(env["M10_STATE_DIR"]), Path(env["M10_LOG_DIR"])
    return [
        *_uploaded_group(state / "fallback-uploads" / f"{tag}.bin", 20),
        _touch(logs / f"m10_stats_2020-0{tag[-1]}.csv", 1),
        _touch(logs / f"m10_stats_2020-0{tag[-1]}.csv.processed", 1),
        _touch(state / "canary" / "reports" / f"report-{tag}.json", 40),
    ]


def _kept_files(env: dict[str, str]) -> list[Path]:
    state = Path(env["M10_STATE_DIR"])
    return [
        _touch(state / "fallback-uploads" / "fresh.bin", 20),  # not uploaded yet
        _touch(state / "canary" / "reports" / "latest_report.json", 40),
    ]


def _old_rows(conn: psycopg.Connection[Any], first: int, n: int) -> None:
    conn.execute(
        "INSERT INTO m10_recovery.replay_log (event_id, event_type, stream, "
        "stream_entry_id, fencing_token, holder_id, enqueued_at, published_at) "
        "SELECT g, 'e', 'm10:outbox', g || '-0', 1, 'h', now(), "
        "now() - interval '40 days' FROM generate_series(%s::int, %s::int) g",
        (first, first + n - 1),
    )


def _run(
    envs: dict[str, dict[str, str]], cfg: Path, *names: str
) -> dict[str, subprocess.CompletedProcess[str]]:
    """m10-maintenance on the named hosts at the same time, as their timers would."""
    procs = {
        n: subprocess.Popen(
            [str(BIN / "m10-maintenance"), "--config", str(cfg)],
            env=envs[n],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in names
    }
    done = {}
    for n, p in procs.items():
        out, err = p.communicate(timeout=120)
        done[n] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
        assert p.returncode in (0, 75), err[-3000:]
    return done


def _tasks(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {t["task"]: t for t in summary(proc)["tasks"]}


def _archived_ids(conn: psycopg.Connection[Any], roots: list[Path]) -> list[int]:
    """event_id of every archived replay_log row (binary COPY chunks, zstd'd)."""
    return [
        r["event_id"]
        for root in roots
        for chunk in sorted(root.rglob("replay_log-*.pgcopy.zst"))
        for r in chunk_rows(conn, chunk.read_bytes())
    ]


def test_each_host_cleans_its_own_files_and_tables_once_cluster_wide(
    conn: psycopg.Connection[Any], env: dict[str, str], tmp_path: Path
) -> None:
    envs = {n: _host_env(env, tmp_path, n) for n in HOSTS}
    cfg = write_config(tmp_path, "", base="")
    old = {n: _old_files(envs[n], f"{n}1") for n in HOSTS}
    kept = {n: _kept_files(envs[n]) for n in HOSTS}
    _old_rows(conn, 1, 300)

    # A third host is in the middle of table retention: nobody here may run it, but each
    # host's files are its own business.  Host a runs first, alone.
    conn.execute("SELECT m10_recovery.acquire_lock('retention_cleanup', 'c:1:x', 120)")
    a = _tasks(_run(envs, cfg, "a")["a"])
    assert a["retention_cleanup"]["status"] == "skipped"
    assert a["retention_files"]["status"] == "ok"
    assert a["retention_files"]["lock"] == "retention_cleanup@a"
    assert a["retention_files"]["summary"]["policies"]["fallback_uploads"]["deleted"] == 3
    assert not any(p.exists() for p in old["a"])
    assert all(p.exists() for p in old["b"] + kept["a"] + kept["b"])  # b's files: b's run
    b = _tasks(_run(envs, cfg, "b")["b"])
    assert b["retention_cleanup"]["status"] == "skipped"
    assert b["retention_files"]["lock"] == "retention_cleanup@b"
    assert not any(p.exists() for p in old["b"])
    assert all(p.exists() for p in kept["a"] + kept["b"])
    assert conn.execute("SELECT count(*) AS n FROM m10_recovery.replay_log").fetchone()["n"] == 300

    # Rounds with both hosts at once: each host's files go on its own run every round;
    # the rows go exactly once, by one holder at a time.
    conn.execute("SELECT m10_recovery.force_release_lock('retention_cleanup')")
    for rnd in (2, 3):
        old = {n: _old_files(envs[n], f"{n}{rnd}") for n in HOSTS}
        _old_rows(conn, rnd * 1000, 200)
        done = {n: _tasks(p) for n, p in _run(envs, cfg, *HOSTS).items()}
        for n in HOSTS:
            assert done[n]["retention_files"]["status"] == "ok"
            assert done[n]["retention_files"]["lock"] == f"retention_cleanup@{n}"
            assert not any(p.exists() for p in old[n]), (rnd, n)
        assert all(p.exists() for p in kept["a"] + kept["b"])
        assert (
            conn.execute("SELECT count(*) AS n FROM m10_recovery.replay_log").fetchone()["n"] == 0
        )
        deleted = [
            d["retention_cleanup"]["summary"]["policies"]["replay_log"]["deleted"]
            for d in done.values()
            if d["retention_cleanup"]["status"] == "ok"
        ]
        assert sum(deleted) == 200 + (300 if rnd == 2 else 0)

    ids = _archived_ids(conn, [Path(envs[n]["M10_STATE_DIR"]) for n in HOSTS])
    assert sorted(ids) == [*range(1, 301), *range(2000, 2200), *range(3000, 3200)]  # once each
    rows = conn.execute(
        "SELECT policy, target, started_at, finished_at, status "
        "FROM m10_recovery.retention_jobs ORDER BY started_at"
    ).fetchall()
    assert {r["status"] for r in rows} == {"succeeded"}
    tables = [r for r in rows if r["target"].startswith("m10_recovery.")]
    for policy in {r["policy"] for r in tables}:
        runs = [r for r in tables if r["policy"] == policy]
        assert all(x["finished_at"] <= y["started_at"] for x, y in pairwise(runs)), policy
    files = [r for r in rows if not r["target"].startswith("m10_recovery.")]
    for n in HOSTS:  # three rounds, three file policies, each on its own host
        assert sum(r["target"].startswith(f"{n}:") for r in files) == 9
    assert len(files) == 18

    # A run killed on host b leaves its file row `running`: host a's run (its own files)
    # and the table task must leave it alone; only b's next run closes it as interrupted.
    conn.execute(
        "INSERT INTO m10_recovery.retention_jobs (run_id, policy, target, cutoff) "
        "VALUES ('dead', 'stats_csv', 'b:/x/m10_stats_*.csv', now())"
    )
    _run(envs, cfg, "a")
    left = "SELECT status FROM m10_recovery.retention_jobs WHERE run_id = 'dead'"
    assert conn.execute(left).fetchone()["status"] == "running"
    _run(envs, cfg, "b")
    assert conn.execute(left).fetchone()["status"] == "failed"
