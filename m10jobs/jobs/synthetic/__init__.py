"""The synthetic traffic flow: m10-synthetic-traffic enqueues probe events into the
outbox and checks that earlier ones reached their stream.

traffic.py is the pass (imported when it runs), settings.py [synthetic_traffic].
"""

from m10jobs.jobs.outbox import STREAM
from m10jobs.jobs.synthetic.settings import LOCK, SyntheticSettings
from m10jobs.registry import Flow, Job

JOB = Job(
    script="m10-synthetic-traffic",
    summary="Enqueue synthetic outbox events and verify earlier ones reached their stream.",
    example="m10-synthetic-traffic --dry-run",
    schedule="*:0/30",
    lock=LOCK,
    run="m10jobs.jobs.synthetic.traffic:synthetic",
    after=("postgresql.service", "redis-server.service"),
    wants=("network-online.target",),
    produces=(
        Flow(
            "table",
            "synthetic events",
            "m10_recovery.outbox (event_type m10.synthetic)",
            "End-to-end probe of the outbox pipeline; event count to journal",
            ("m10-outbox-processor",),
        ),
    ),
    consumes=("m10_recovery.outbox", STREAM),
    settings=(SyntheticSettings,),
)
