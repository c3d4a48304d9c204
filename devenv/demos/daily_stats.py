"""Daily stats: export with the store down (fallback kept), retry while down (69),
retry once it is back (verified upload, `.uploaded`), then postflight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devenv.demo import Demo

ORDER = 40
CONFIG = """
[daily_stats]
timezone = "UTC"
key_prefix = "m10/stats/"

[retry_r2_fallbacks]
alert_after_hours = 24
"""


def run(d: Demo) -> None:
    import boto3

    from devenv.services import free_port

    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    start = yesterday - timedelta(days=2)
    d.say(f"some outbox traffic on the last three days ({start} .. {yesterday})")
    d.sql(
        """INSERT INTO m10_recovery.outbox (event_type, payload, status, created_at,
                                              published_at)
             SELECT CASE WHEN g %% 10 = 0 THEN 'm10.synthetic' ELSE 'demo.event' END, '{}',
                    'published', ts, ts + make_interval(secs => (g %% 50) * 0.01)
               FROM generate_series(1, 3000) g,
                    LATERAL (SELECT %(start)s::date::timestamptz
                                    + make_interval(secs => g * 86.4) AS ts) t""",
        {"start": start.isoformat()},
    )

    endpoint = d.env["M10_R2_ENDPOINT_URL"]
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=d.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=d.env["AWS_SECRET_ACCESS_KEY"],
    )
    s3.create_bucket(Bucket=d.env["M10_R2_BUCKET"])

    d.say(
        "export three days while object storage is down (endpoint on a closed port): "
        "the CSV is kept in fallback-uploads/, the export still succeeds"
    )
    d.env["M10_R2_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    try:
        d.run("m10-daily-stats", "--start-date", start.isoformat())
        d.show(
            "\n".join(
                f"fallback-uploads/{p.name}"
                for p in sorted((d.stack.base / "state" / "fallback-uploads").iterdir())
                if not p.name.startswith(".")
            )
        )
        d.say("retry while the store is still down: exit 69, attempt counted")
        d.run("m10-retry-r2-fallbacks", expect=69)
    finally:
        d.env["M10_R2_ENDPOINT_URL"] = endpoint
    d.say("the store is back: retry uploads, reads back and verifies, writes .uploaded")
    d.run("m10-retry-r2-fallbacks")
    d.show(
        "\n".join(
            f"s3://{d.env['M10_R2_BUCKET']}/{obj['Key']}  {obj['Size']} bytes"
            for obj in s3.list_objects_v2(Bucket=d.env["M10_R2_BUCKET"]).get("Contents", [])
        )
    )
    d.say("rerun the export: no day is duplicated; postflight checks CSVs against markers")
    d.run("m10-daily-stats")
    d.run("m10", "postflight")
    for p in sorted((d.stack.base / "log").glob("m10_stats_*")):
        d.show("\n".join([f"--- {p.name}", *p.read_text().splitlines()[:5]]))
