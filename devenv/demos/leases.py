"""Leases: a pass, a lease held elsewhere (exit 75), GC of a dead holder's lease."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devenv.demo import Demo

ORDER = 10


def run(d: Demo) -> None:
    d.say("maintenance pass: reclaim_gc under its own lease")
    d.run("m10-maintenance")
    d.say("another host holds reclaim_gc: that task is skipped with exit 75")
    d.sql("SELECT m10_recovery.acquire_lock('reclaim_gc', 'other-host:4242:demo', 60)")
    d.run("m10", "locks", "list")
    d.run("m10", "run", "reclaim_gc", expect=75)
    d.say("an operator who knows that host is gone releases its lease by hand")
    d.run("m10", "locks", "release", "reclaim_gc", "--force")
    d.say("a dead holder's lease lapses (TTL 1 s) and is garbage-collected")
    d.sql("SELECT m10_recovery.acquire_lock('m10:dead_job', 'crashed-host:1:demo', 1)")
    time.sleep(1.2)
    d.run("m10-maintenance")
    d.run("m10", "locks", "list")
