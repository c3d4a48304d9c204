"""Object storage (R2 or any S3-compatible store) through boto3.

boto3 is imported here only (it costs ~300 ms), by the jobs that upload;
fallback and retry_r2_fallbacks import botocore's exception classes inside
their functions.
Explicit timeouts and a bounded retry: a pass never hangs on a dead endpoint.
Credentials come from boto3's usual chain (env, shared files, instance role).
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from m10jobs.config import Config

CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30
MAX_ATTEMPTS = 3


def client(config: Config) -> Any:
    """An S3 client for M10_R2_ENDPOINT_URL (None: AWS's own endpoint)."""
    return boto3.client(
        "s3",
        endpoint_url=config.r2_endpoint_url,
        config=BotoConfig(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                          retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"}),
    )


def bucket(config: Config) -> str:
    return config.require("r2_bucket")

