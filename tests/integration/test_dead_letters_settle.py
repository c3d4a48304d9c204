"""Dead letters that cannot be replayed: an oversize payload stays a bounded record (never
copied, never replayed automatically, memory bounded), and an operator settles them with
`m10 dl discard` / bulk `m10 dl replay`.  Real PostgreSQL, redis-server, real processes."""

from __future__ import annotations

import getpass
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import BIN
from tests.maintenance_support import DEFAULT_TOML, client, event_fields, write_config

BIG = 20 * 1024 * 1024  # the payload's blob, far over outbox.max_payload_bytes (1 MB)
CONFIG = DEFAULT_TOML + "\n[outbox]\nmax_payload_bytes = 1000000\n"

# Runs one command and prints its peak RSS in KiB: the wrapper's only child is the job,
# so RUSAGE_CHILDREN is that process's own high-water mark, nothing of the test's.
PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
    "stderr=subprocess.DEVNULL).returncode\n"
    "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def peak_rss(env: dict[str, str], script: str, *args: str) -> tuple[int, int]:
    """(exit code, peak RSS in bytes) of one run of a console script."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(BIN / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout.split()
    return int(out[0]), int(out[1]) * 1024


def enqueue_blob(conn: psycopg.Connection[Any], size: int, key: str) -> int:
    """One event whose payload's blob is `size` bytes, built by the server (the test
    process never holds it)."""
    return conn.execute(
        "SELECT m10_recovery.enqueue_outbox('blob.event', jsonb_build_object('blob', "
        "repeat('x', %s)), 'blob', %s, %s) AS id",
        (size, key, key),
    ).fetchone()["id"]


def test_oversize_payload_is_a_bounded_dead_letter_never_replayed_and_memory_stays_flat(
    conn: psycopg.Connection[Any], env: dict[str, str], tmp_path: Path, redis_url: str, cli: Any
) -> None:
    cfg = str(write_config(tmp_path, base=CONFIG))
    r = client(redis_url)
    r.xgroup_create("m10:outbox", "workers", id="0", mkstream=True)

    # Baselines: the same passes dead-lettering a payload just over the limit.
    enqueue_blob(conn, 1_100_000, "small")
    small_proc = peak_rss(env, "m10-outbox-processor", "--config", cfg)
    small_maint = peak_rss(env, "m10-maintenance", "--config", cfg)
    assert small_proc[0] == 0 and small_maint[0] == 1  # 1: an abandoned dead letter

    big_id = enqueue_blob(conn, BIG, "big")
    big_proc = peak_rss(env, "m10-outbox-processor", "--config", cfg)
    assert big_proc[0] == 0
    [(_, dl)] = [e for e in r.xrange("m10:dead_letter") if e[1]["event_id"] == str(big_id)]
    assert sum(len(k) + len(v) for k, v in dl.items()) < 4096
    assert "payload" not in dl and dl["refusal"] == "size"
    assert int(dl["payload_bytes"]) > BIG
    text = conn.execute(
        "SELECT payload::text AS t FROM m10_recovery.outbox WHERE id = %s", (big_id,)
    ).fetchone()["t"]
    assert dl["payload_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert text.startswith(dl["payload_preview"]) and len(dl["payload_preview"]) == 256
    del text

    big_maint = peak_rss(env, "m10-maintenance", "--config", cfg)
    assert big_maint[0] == 1
    # A job's memory follows its settings, not its input: the 20 MB payload adds far
    # less than its own size (a single copy of it in the process would add 20 MB; the
    # unbounded code held several).  Same code path, same settings, so the baselines
    # absorb the interpreter and drivers; 8 MB leaves room for allocator noise.
    print(f"peak RSS MiB: processor {small_proc[1] >> 20} -> {big_proc[1] >> 20}, "
          f"maintenance {small_maint[1] >> 20} -> {big_maint[1] >> 20}")  # fmt: skip
    assert big_proc[1] - small_proc[1] < 8 << 20, (big_proc, small_proc)
    assert big_maint[1] - small_maint[1] < 8 << 20, (big_maint, small_maint)

    row = conn.execute(
        "SELECT id, payload, refusal, reconcile_outcome, pg_column_size(a.*) AS bytes "
        "FROM m10_recovery.dead_letter_archive a WHERE event_id = %s",
        (big_id,),
    ).fetchone()
    assert row["bytes"] < 4096 and row["payload"] is None
    assert (row["refusal"], row["reconcile_outcome"]) == ("size", "abandoned")
    # never replayed automatically: the outbox holds only the two original events
    assert conn.execute("SELECT count(*) AS n FROM m10_recovery.outbox").fetchone()["n"] == 2
    again = cli("m10-maintenance", "--config", cfg)
    assert again.returncode == 1, again.stderr
    assert conn.execute("SELECT count(*) AS n FROM m10_recovery.outbox").fetchone()["n"] == 2

    # by hand: refused in one line that says what to do instead
    refused = cli("m10", "dl", "replay", str(row["id"]), "--force", "--config", cfg)
    assert refused.returncode == 65, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert "refused for its size" in line and f"m10 outbox retry {big_id}" in line
    assert "m10 dl discard" in line and "Traceback" not in line


def _dl(r: Any, event_id: int, key: str, *, event_type: str = "order.created", **kw: Any) -> str:
    return r.xadd(
        "m10:dead_letter",
        {
            **event_fields(event_id, key, event_type=event_type, **kw),
            "reason": "boom",
            "attempts": "5",
            "source_stream": "m10:outbox",
            "source_entry_id": f"{event_id}-0",
        },
    )


def _rows(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    return {
        row["idempotency_key"]: row
        for row in conn.execute(
            "SELECT id, idempotency_key, reconcile_outcome, refusal, discarded_by, "
            "discard_reason, reconciled_at, replay_event_id "
            "FROM m10_recovery.dead_letter_archive ORDER BY id"
        )
    }


def test_operator_discards_and_bulk_replays_abandoned_dead_letters(
    conn: psycopg.Connection[Any], tmp_path: Path, redis_url: str, cli: Any
) -> None:
    r = client(redis_url)
    cfg = str(
        write_config(tmp_path, base=DEFAULT_TOML.replace("max_replays = 2", "max_replays = 0"))
    )
    _dl(r, 1, "garbage", event_type="junk.event", payload="{not json")
    _dl(r, 2, "no-type", event_type="")
    _dl(r, 3, "orders-a")
    _dl(r, 4, "orders-b")
    _dl(r, 5, "users-a", event_type="user.created")
    first = cli("m10-maintenance", "--config", cfg)
    assert first.returncode == 1 and "5 dead letter(s) are abandoned" in first.stderr
    rows = _rows(conn)
    assert {k: v["refusal"] for k, v in rows.items()} == {
        "garbage": "shape",
        "no-type": "shape",
        "orders-a": None,
        "orders-b": None,
        "users-a": None,
    }

    # bulk replay, dry run: says what it would do, changes nothing
    before = _rows(conn)
    dry = cli("m10", "dl", "replay", "--outcome", "abandoned", "--dry-run", "--config", cfg)
    assert dry.returncode == 65, dry.stderr  # the two refusals
    assert dry.stdout.count("would be replayed (replay 1)") == 3
    assert "3 would be replayed, 2 not (dry run)" in dry.stdout
    assert "its payload is not JSON" in dry.stderr and "no event_type" in dry.stderr
    assert _rows(conn) == before
    assert conn.execute("SELECT count(*) AS n FROM m10_recovery.outbox").fetchone()["n"] == 0

    # filters: --type and --since (an age, from the database clock)
    typed = cli(
        "m10", "dl", "replay", "--outcome", "abandoned", "--type", "order.created",
        "--since", "1h", "--config", cfg,
    )  # fmt: skip
    assert typed.returncode == 0, typed.stderr
    assert "2 replayed, 0 not" in typed.stdout
    rows = _rows(conn)
    assert rows["orders-a"]["reconcile_outcome"] == rows["orders-b"]["reconcile_outcome"]
    assert rows["orders-a"]["reconcile_outcome"] == "replayed"
    assert rows["users-a"]["reconcile_outcome"] == "abandoned"
    old = cli("m10", "dl", "replay", "--outcome", "abandoned", "--since", "2000-01-01T00:00+00:00",
              "--type", "nothing.like.it", "--config", cfg)  # fmt: skip
    assert old.returncode == 0 and "0 replayed, 0 not" in old.stdout
    bad = cli("m10", "dl", "replay", "--outcome", "abandoned", "--since", "last week")
    assert bad.returncode == 2 and "--since" in bad.stderr and "Usage" in bad.stderr
    neither = cli("m10", "dl", "replay", "--config", cfg)
    assert neither.returncode == 2 and "--outcome abandoned" in neither.stderr

    # single replay (the same path) of the refused one: one line, 65
    one = cli("m10", "dl", "replay", str(rows["garbage"]["id"]), "--config", cfg)
    assert one.returncode == 65 and one.stderr.count("\n") == 1
    assert f"m10 dl discard {rows['garbage']['id']}" in one.stderr

    # discard: recorded with who, why, when (database clock); idempotent
    ids = [str(rows[k]["id"]) for k in ("garbage", "no-type", "users-a")]
    db_before = conn.execute("SELECT now() AS t").fetchone()["t"]
    done = cli("m10", "dl", "discard", *ids, "--reason", "bad import", "--config", cfg)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("discarded by") == 3
    rows = _rows(conn)
    for k in ("garbage", "no-type", "users-a"):
        assert rows[k]["reconcile_outcome"] == "discarded"
        assert rows[k]["discarded_by"].startswith(getpass.getuser() + "@")
        assert rows[k]["discard_reason"] == "bad import"
        assert rows[k]["reconciled_at"] >= db_before
    twice = cli("m10", "dl", "discard", ids[0], "--reason", "again", "--config", cfg)
    assert twice.returncode == 0 and "already discarded" in twice.stdout
    assert _rows(conn)["garbage"]["discard_reason"] == "bad import"
    listed = cli("m10", "dl", "list", "--outcome", "discarded", "--json", "--config", cfg)
    got = [json.loads(x) for x in listed.stdout.splitlines()]
    assert len(got) == 3 and all(g["discard_reason"] == "bad import" for g in got)
    table = cli("m10", "dl", "list", "--config", cfg).stdout
    assert "SETTLED" in table and "bad import" in table and "shape" in table

    # nothing abandoned is left: maintenance is healthy again, and m10 status agrees
    healthy = cli("m10-maintenance", "--config", cfg)
    assert healthy.returncode == 0, healthy.stderr
    status = json.loads(cli("m10", "status", "--json", "--config", cfg).stdout)
    assert status["pipeline"]["dead_letters"]["abandoned"] == 0

    # refused: a replayed letter is not discarded, an unknown id is bad data, no reason is usage
    replayed = cli("m10", "dl", "discard", str(rows["orders-a"]["id"]), "--reason", "x",
                   "--config", cfg)  # fmt: skip
    assert replayed.returncode == 1 and "already replayed" in replayed.stderr
    missing = cli("m10", "dl", "discard", "999999", "--reason", "x", "--config", cfg)
    assert missing.returncode == 65 and "does not exist" in missing.stderr
    blank = cli("m10", "dl", "discard", ids[0], "--reason", " ", "--config", cfg)
    assert blank.returncode == 2
    conn.execute("SELECT m10_recovery.acquire_lock('dl_reconcile', 'other', 60)")
    busy = cli("m10", "dl", "discard", ids[0], "--reason", "x", "--config", cfg)
    assert busy.returncode == 75
