"""The fallback upload flow: m10-retry-r2-fallbacks re-uploads what
retry_local_fallback() kept on this host (m10jobs/edges/fallback.py, the edge
every uploader goes through), writing .uploaded markers.

retry.py is the pass (imported when it runs), settings.py [retry_r2_fallbacks].
"""

from m10jobs.jobs.fallback.settings import RetrySettings
from m10jobs.registry import Flow, Job

JOB = Job(
    script="m10-retry-r2-fallbacks",
    checks="m10jobs.jobs.fallback.health:checks",
    summary="Re-upload files kept by retry_local_fallback(); write .uploaded markers.",
    example="m10-retry-r2-fallbacks --dry-run",
    schedule="*:0/15",
    lock="m10:retry_r2_fallbacks",
    scope="host",  # uploads this host's fallback files: every host drains its own
    run="m10jobs.jobs.fallback.retry:retry_pass",
    after=("network-online.target",),
    wants=("network-online.target",),
    produces=(
        Flow(
            "marker",
            ".uploaded",
            "$M10_STATE_DIR/fallback-uploads/<name>.uploaded",
            "Fallback file stored in R2 and verified",
            ("retention_cleanup",),
        ),
    ),
    consumes=("$M10_STATE_DIR/fallback-uploads/<name>.meta.json",),
    settings=(RetrySettings,),
)
