"""Fallback uploads: (a) retry_local_fallback() per call beside 20,000 pending entries vs
beside 50 (goal <= 1.5x: the writer finds a same-key copy by name, not by reading the
backlog); (b) m10-retry-r2-fallbacks' upload rate vs a plain boto3 upload loop of the
same files in one process against the same moto server (the floor it must reach).

Sizes: M10_BENCH_FALLBACK_PENDING (default 20,000), M10_BENCH_FALLBACK_UPLOADS (2,000).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from devenv.fallbacks import plant
from m10jobs.config import load_config
from m10jobs.edges import fallback

if TYPE_CHECKING:
    from benchmarks.run import Bench

PENDING = int(os.environ.get("M10_BENCH_FALLBACK_PENDING", "20000"))
UPLOADS = int(os.environ.get("M10_BENCH_FALLBACK_UPLOADS", "2000"))
CALLS = 200


def _writer_call_ms(state: Path, pending: int) -> float:
    """Median ms of one retry_local_fallback() (new key, new entry) beside `pending`."""
    config = load_config(None, env={"M10_STATE_DIR": str(state)})
    plant(fallback.fallback_dir(config), "bucket", pending)
    times = []
    for i in range(CALLS):
        data = f"call {i}\n".encode()
        t0 = time.perf_counter()
        fallback.retry_local_fallback(
            config, data, f"{i}.csv", "bucket", f"new/{i}.csv", "text/csv", "bench"
        )
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _client(env: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["M10_R2_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


def _plain_loop(env: dict[str, str], directory: Path, bucket: str) -> float:
    """Files/s of put_object, one after the other, of every planted file."""
    s3 = _client(env)
    s3.create_bucket(Bucket=bucket)
    paths = [p for p in directory.iterdir() if p.name.endswith(".csv")]
    t0 = time.monotonic()
    for p in paths:
        s3.put_object(Bucket=bucket, Key=p.name, Body=p.read_bytes())
    return len(paths) / (time.monotonic() - t0)


def run(bench: Bench) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        small = _writer_call_ms(Path(tmp) / "small", 50)
        large = _writer_call_ms(Path(tmp) / "large", PENDING)
    bench.report(
        f"fallback write beside {PENDING:,} pending (median of {CALLS})",
        large,
        "ms",
        baseline=small,
        baseline_name="beside 50",
        goal="<= 1.50x",
    )

    assert bench.stack.s3 is not None
    env = {**os.environ, **bench.stack.env()}
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        env.update({"M10_STATE_DIR": str(state), "M10_R2_BUCKET": "bench-retry"})
        directory = state / "fallback-uploads"
        plant(directory, "bench-retry", UPLOADS, size=4096)
        floor = _plain_loop(env, directory, "bench-plain")
        _client(env).create_bucket(Bucket="bench-retry")
        env["M10_DATABASE_URL"] = bench.fresh_db()  # its lease
        proc = subprocess.run(
            [str(bench.bin / "m10-retry-r2-fallbacks")],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if proc.returncode != 0:
            raise SystemExit(f"retry exited {proc.returncode}: {proc.stderr[-2000:]}")
        task = json.loads(proc.stdout.strip().splitlines()[-1])["tasks"][0]
    assert task["summary"]["uploaded"] == UPLOADS, task
    bench.report(
        f"retry job uploads ({UPLOADS:,} files of 4 KiB)",
        UPLOADS / task["duration_s"],
        "files/s",
        baseline=floor,
        baseline_name="plain boto3 loop",
        goal=">= 1.00x",
    )
