"""Feature flags (m10jobs.flags, `m10 flags`, rollback.set_flags) as separate processes:
concurrent writers killed with SIGKILL never leave a torn file or lose an acknowledged
set; the rollback's flags are applied exactly once per acted report, also when its
process is killed between the ledger claim and the file write."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from m10jobs import flags
from tests.acceptance.test_rollback import put_report
from tests.canary_support import task_summary


def _state(env: dict[str, str]) -> Path:
    return Path(env["M10_STATE_DIR"])


def test_set_get_unset_list_and_the_audit_trail(cli: Any, env: dict[str, str]) -> None:
    env = {**env, "SUDO_USER": "alice"}
    assert cli("m10", "flags", "set", "checkout.v2", "true", "--reason", "launch", env=env)
    assert cli("m10", "flags", "set", "banner", "hello world", env=env).returncode == 0
    assert cli("m10", "flags", "set", "limit", "12.5", env=env).returncode == 0
    assert cli("m10", "flags", "set", "checkout.v2", "false", "--reason", "inc 42", env=env)

    get = cli("m10", "flags", "get", "banner", env=env)
    assert (get.returncode, get.stdout) == (0, "hello world\n")
    assert cli("m10", "flags", "get", "checkout.v2", env=env).stdout == "false\n"
    assert cli("m10", "flags", "get", "banner", "--json", env=env).stdout == '"hello world"\n'
    missing = cli("m10", "flags", "get", "nope", env=env)
    assert missing.returncode == 1 and missing.stdout == ""
    assert "flag nope is not set" in missing.stderr
    default = cli("m10", "flags", "get", "nope", "--default", "off", env=env)
    assert (default.returncode, default.stdout) == (0, "off\n")

    listed = cli("m10", "flags", "list", "--json", env=env)
    assert json.loads(listed.stdout) == {
        "banner": "hello world",
        "checkout.v2": False,
        "limit": 12.5,
    }
    assert cli("m10", "flags", "unset", "limit", "--reason", "done", env=env).returncode == 0
    assert "limit" not in flags.flags(_state(env))

    trail = flags.read(_state(env))["audit"]
    last = [e for e in trail if e["flag"] == "checkout.v2"][-1]
    assert last["who"].startswith("alice@") and last["reason"] == "inc 42"
    assert (last["previous"], last["value"], last["source"]) == (True, False, "m10 flags")
    gone = trail[-1]
    assert (gone["flag"], gone["action"], gone["previous"]) == ("limit", "unset", 12.5)
    assert "value" not in gone
    text = cli("m10", "flags", "audit", "checkout.v2", env=env).stdout.splitlines()
    assert len(text) == 2 and text[1].endswith("true -> false (inc 42)")

    bad = cli("m10", "flags", "set", "no spaces", "1", env=env)
    assert bad.returncode == 2 and "Usage:" in bad.stderr


def test_a_torn_or_foreign_file_is_refused_with_65(cli: Any, env: dict[str, str]) -> None:
    path = flags.path(_state(env))
    path.parent.mkdir(parents=True)
    path.write_text('{"format": 1, "flags": {"a": tr')
    proc = cli("m10", "flags", "get", "a", env=env)
    assert proc.returncode == 65 and "flags file" in proc.stderr
    assert "Traceback" not in proc.stderr


WRITER = """
import os, sys
from pathlib import Path
from m10jobs import flags
state, worker, count, acks = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(acks, "a") as out:
    for i in range(count):
        name = f"w{worker}-{i % 5}"
        flags.update(state, {name: i}, who="test", reason=None, source="test")
        out.write(f"{name} {i}\\n")   # acknowledged: the update returned
        out.flush()
        os.fsync(out.fileno())
"""

READER = """
import sys, time
from pathlib import Path
from m10jobs import flags
state, until = Path(sys.argv[1]), float(sys.argv[2])
reads = 0
while time.time() < until:
    flags.read(state)                  # BadInput (exit 1 with a traceback) on a torn file
    reads += 1
print(reads)
"""


def test_concurrent_writers_killed_midway_never_tear_or_lose_an_acknowledged_set(
    env: dict[str, str], tmp_path: Path
) -> None:
    state = _state(env)
    workers, count = 8, 25
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(state), str(time.time() + 8)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    victims = random.Random(7).sample(range(workers), 3)
    # a victim writes until it is killed, so it is always mid-way when the signal lands
    sets = {w: 10**6 if w in victims else count for w in range(workers)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                str(state),
                str(w),
                str(sets[w]),
                str(tmp_path / f"{w}"),
            ],
            env=env,
        )
        for w in range(workers)
    ]
    for n, w in enumerate(victims):  # mid-way: after 2, 4, 6 acknowledged sets, wherever
        acks = tmp_path / f"{w}"  # it then is (in a write, waiting on the lock, between)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            not acks.exists() or len(acks.read_text().splitlines()) < 2 * (n + 1)
        ):
            time.sleep(0.001)
        procs[w].send_signal(signal.SIGKILL)
    for p in procs:
        p.wait(timeout=120)
    out, _ = reader.communicate(timeout=60)
    assert reader.returncode == 0 and int(out) > 0

    final = flags.read(state)["flags"]
    for w in range(workers):
        acks_file = tmp_path / f"{w}"
        acked: dict[str, int] = {}
        for line in acks_file.read_text().splitlines() if acks_file.exists() else ():
            name, value = line.split()
            acked[name] = int(value)
        if w in victims:
            assert procs[w].returncode == -signal.SIGKILL
        else:
            assert procs[w].returncode == 0
            assert acked == {f"w{w}-{i}": count - 5 + i for i in range(5)}
        for name, value in acked.items():  # present, or superseded by a later set of it
            assert final[name] >= value, (name, final.get(name), value)
    assert not list(state.glob("flags/.*.tmp"))  # a killed writer's temp is swept by the next


def _config(env: dict[str, str], tmp_path: Path, command: list[str] | None = None) -> None:
    env["M10_HOSTNAME"] = "host-a"
    path = tmp_path / "c.toml"
    lines = ["[rollback]", "cooldown_seconds = 0"]
    if command:
        lines.append(f"command = {json.dumps(command)}")
        lines.append('pass_env = ["ROLLBACK_OUT"]')
    lines += ["[rollback.set_flags]", "checkout-v2 = false", 'banner = "degraded"']
    path.write_text("\n".join(lines) + "\n")
    env["M10_CONFIG"] = str(path)


def _ledger(env: dict[str, str]) -> list[dict[str, Any]]:
    with psycopg.connect(env["M10_DATABASE_URL"], row_factory=dict_row) as c:
        return c.execute(
            "SELECT * FROM m10_recovery.rollback_actions ORDER BY started_at"
        ).fetchall()


def _rollback_entries(env: dict[str, str]) -> list[dict[str, Any]]:
    return [e for e in flags.read(_state(env))["audit"] if e["source"] == "m10-rollback"]


def test_rollback_sets_its_flags_once_per_acted_report(
    cli: Any, env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "rolled-back.txt"
    env["ROLLBACK_OUT"] = str(out)
    _config(env, tmp_path, ["sh", "-c", 'echo "$M10_CANARY_RUN_ID" >> "$ROLLBACK_OUT"'])
    cli("m10", "flags", "set", "checkout-v2", "true", env=env)
    report = put_report(env, "fail")

    first = cli("m10-rollback", env=env)
    assert first.returncode == 0, first.stderr
    assert task_summary(first.stdout)["decision"] == "acted"
    assert flags.flags(_state(env)) == {"checkout-v2": False, "banner": "degraded"}
    entries = _rollback_entries(env)
    assert [(e["flag"], e.get("previous")) for e in entries] == [
        ("checkout-v2", True),
        ("banner", None),
    ]
    assert entries[0]["who"] == "m10-rollback@host-a"
    assert report["run_id"] in entries[0]["reason"]

    # An operator switches it back on; the same verdict, rolled back again, changes nothing.
    cli("m10", "flags", "set", "checkout-v2", "true", env=env)
    second = cli("m10-rollback", env=env)
    assert second.returncode == 0 and task_summary(second.stdout)["decision"] == "already_acted"
    assert flags.flags(_state(env))["checkout-v2"] is True
    assert len(_rollback_entries(env)) == 2 and len(out.read_text().splitlines()) == 1
    [row] = _ledger(env)
    assert row["outcome"] == "succeeded" and row["flags_applied_at"] is not None
    assert row["set_flags"] == {"checkout-v2": False, "banner": "degraded"}

    # A new failing verdict is a new action: applied once more.
    put_report(env, "fail")
    assert cli("m10-rollback", env=env).returncode == 0
    assert flags.flags(_state(env))["checkout-v2"] is False
    assert len(_rollback_entries(env)) == 4


def test_flags_alone_are_the_action(cli: Any, env: dict[str, str], tmp_path: Path) -> None:
    _config(env, tmp_path)
    put_report(env, "fail")
    proc = cli("m10-rollback", env=env)
    assert proc.returncode == 0, proc.stderr
    assert task_summary(proc.stdout)["decision"] == "acted"
    assert flags.flags(_state(env)) == {"checkout-v2": False, "banner": "degraded"}
    [row] = _ledger(env)
    assert row["outcome"] == "succeeded" and row["exit_status"] is None
    dry = cli("m10-rollback", "--dry-run", env=env)
    assert dry.returncode == 0 and len(_rollback_entries(env)) == 2


KILLED = """
import os, signal
import m10jobs.flags as f
real = f.update
def update(*a, **k):
    if {after}:
        real(*a, **k)
    os.kill(os.getpid(), signal.SIGKILL)
f.update = update
from m10jobs.cli.entry import m10_rollback
m10_rollback([])
"""


def test_killed_between_the_claim_and_the_write_then_rerun_applies_once(
    cli: Any, env: dict[str, str], tmp_path: Path
) -> None:
    for after in (False, True):  # killed before the file write, then after it (before the stamp)
        _config(env, tmp_path)
        put_report(env, "fail")
        before = len(_rollback_entries(env))
        proc = subprocess.run(
            [sys.executable, "-c", KILLED.format(after=after)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        row = _ledger(env)[-1]
        assert row["set_flags"] is not None and row["flags_applied_at"] is None
        assert len(_rollback_entries(env)) == before + (2 if after else 0)
        with psycopg.connect(env["M10_DATABASE_URL"]) as c:  # its lease expired, as it would
            c.execute("DELETE FROM m10_recovery.distributed_locks WHERE lock_name LIKE 'm10:roll%'")

        rerun = cli("m10-rollback", env=env)
        assert rerun.returncode == 0, rerun.stderr
        summary = task_summary(rerun.stdout)
        assert summary["decision"] == "already_acted"
        # Written now, or found written (the file holds the action id): stamped either way.
        assert summary.get("flags_resumed") == (None if after else [row["report_run_id"]])
        assert _ledger(env)[-1]["flags_applied_at"] is not None
        assert len(_rollback_entries(env)) == before + 2  # exactly once
        assert flags.flags(_state(env)) == {"checkout-v2": False, "banner": "degraded"}
        assert cli("m10-rollback", env=env).returncode == 0
        assert len(_rollback_entries(env)) == before + 2
