"""`m10 status`, the one screen: red for what went wrong (the scenes' leftovers, then a
staged lease whose holder is gone), each red line naming its fix; green after the fixes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devenv.demo import Demo

ORDER = 90
STUCK_LEASE = """INSERT INTO m10_recovery.distributed_locks
                 (lock_name, holder_id, fencing_token, acquired_at, expires_at, extended_at)
                 VALUES ('m10:outbox_processor', 'gone-host:4242:demo',
                         nextval('m10_recovery.fencing_token_seq'), now() - interval '2 hours',
                         now() + interval '4 minutes', now() - interval '1 minute')"""


def run(d: Demo) -> None:
    d.say("m10 status after the scenes: red for what they left behind, each with its fix")
    d.run("m10", "status", expect=1)
    d.say("the fixes it names: reclaim the lapsed lease, run the daily cost job with a good config")
    d.run("m10", "run", "reclaim_gc")
    d.run("m10", "run", "aos-cost-snapshot-daily")
    d.run("m10", "status")
    d.say("a host died holding the outbox lease two hours ago: m10 status goes red, naming the fix")
    d.sql(STUCK_LEASE)
    d.run("m10", "status", expect=1)
    d.say("the fix it names: release the dead holder's lease; m10 status is green again")
    d.run("m10", "locks", "release", "m10:outbox_processor", "--force")
    d.run("m10", "status")
