"""The canary flow: m10-canary runs the probes and writes latest_report.json;
m10-rollback acts at most once on a fresh failing one.

runner.py (probes, scoring) and rollback.py are the passes (imported when they
run), report.py the report schema both share, settings.py the [canary] and
[rollback] tables.
"""

from m10jobs.jobs.canary.settings import LATEST, CanarySettings, RollbackSettings
from m10jobs.registry import Flow, Job

CANARY = Job(
    script="m10-canary",
    checks="m10jobs.jobs.canary.health:checks",
    lock="m10:canary",
    run="m10jobs.jobs.canary.runner:canary_pass",
    summary="Run the configured canary probes and write latest_report.json.",
    example="m10-canary --config /etc/m10jobs/m10jobs.toml --dry-run",
    schedule="*:0/5",
    after=("postgresql.service", "redis-server.service"),
    wants=("network-online.target",),
    produces=(
        Flow(
            "marker",
            LATEST,
            f"$M10_STATE_DIR/canary/reports/{LATEST}",
            "Canary verdict (pass/marginal/fail/inconclusive), score and per-probe results; "
            "history copy <run_id>.json beside it",
            ("m10-rollback",),
        ),
    ),
    consumes=("m10_recovery.outbox", "m10_recovery.dead_letter_archive"),
    settings=(CanarySettings,),
)


ROLLBACK = Job(
    script="m10-rollback",
    lock="m10:rollback",
    scope="host",  # reads this host's report; the ledger in PostgreSQL decides who acts
    run="m10jobs.jobs.canary.rollback:rollback_pass",
    summary="Roll back once when the latest canary report is a fresh fail.",
    example="m10-rollback --dry-run",
    schedule="*:1/5",
    after=("postgresql.service", "m10-canary.service"),
    produces=(
        Flow(
            "table",
            "rollback_actions",
            "m10_recovery.rollback_actions",
            "Cluster-wide ledger of the reports a rollback acted on (claim, then outcome)",
            ("m10 canary status",),
        ),
    ),
    consumes=(f"$M10_STATE_DIR/canary/reports/{LATEST}",),
    timeout_seconds=720,
    ttl_seconds=900,  # above the pass timeout: the lease outlives the longest rollback
    settings=(RollbackSettings,),
)


JOBS = (CANARY, ROLLBACK)
