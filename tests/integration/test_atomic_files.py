"""Atomic artifacts under SIGKILL: the target is always the old or a new complete file."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from m10jobs.edges.files import atomic_write, atomic_write_json, file_lock

WRITER = textwrap.dedent("""
    import hashlib, json, random, sys
    from pathlib import Path
    from m10jobs.edges.files import atomic_write
    target = Path(sys.argv[1])
    i = 0
    while True:
        i += 1
        body = "x" * random.randint(1_000, 400_000)
        doc = {"i": i, "body": body, "sha": hashlib.sha256(body.encode()).hexdigest()}
        atomic_write(target, json.dumps(doc))
""")


def check_whole(path: Path) -> int:
    doc = json.loads(path.read_text())
    assert hashlib.sha256(doc["body"].encode()).hexdigest() == doc["sha"]
    return doc["i"]


def test_sigkill_during_writes_never_leaves_a_torn_file(tmp_path: Path) -> None:
    target = tmp_path / "latest_report.json"
    body = "initial"
    atomic_write(
        target, json.dumps({"i": 0, "body": body, "sha": hashlib.sha256(body.encode()).hexdigest()})
    )
    rng = random.Random(7)
    seen = set()
    for _ in range(30):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
        time.sleep(0.25 + rng.random() * 0.15)  # after imports, in the middle of writes
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        seen.add(check_whole(target))
    assert len(seen) > 1  # the writer did replace the file between kills
    atomic_write(target, "{}")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []  # the next writer cleaned up after the killed ones


def test_mode_and_json_and_directory_creation(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "dir" / "m.json"
    atomic_write_json(target, {"b": 1, "a": 2}, mode=0o600)
    assert json.loads(target.read_text()) == {"a": 2, "b": 1}
    assert target.stat().st_mode & 0o777 == 0o600


def test_file_lock_serialises_read_modify_write(tmp_path: Path) -> None:
    counter = tmp_path / "n.txt"
    atomic_write(counter, "0")

    def bump() -> None:
        for _ in range(50):
            with file_lock(counter):
                atomic_write(counter, str(int(counter.read_text()) + 1))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.read_text() == "200"
