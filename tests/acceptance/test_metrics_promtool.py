"""The textfile metrics the jobs write pass Prometheus' own linter (promtool)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)"
)
def test_job_metrics_pass_promtool(cli: Any, env: dict[str, str]) -> None:
    assert cli("m10-maintenance").returncode == 0
    assert cli("m10-outbox-processor").returncode == 0
    assert cli("m10", "units", "record-failure", "m10-canary.service").returncode == 0
    files = sorted(Path(env["M10_METRICS_DIR"]).glob("*.prom"))
    assert len(files) == 3
    # what the outbox found of Redis, for the M10Redis* alerts (the test Redis: a primary)
    outbox = (Path(env["M10_METRICS_DIR"]) / "m10_outbox_processor.prom").read_text()
    assert 'm10_redis_primary{job="m10-outbox-processor"} 1' in outbox
    assert "m10_redis_durable{" in outbox and "m10_redis_connected_replicas{" in outbox
    for prom in files:
        check = subprocess.run(
            ["promtool", "check", "metrics"], input=prom.read_text(), capture_output=True, text=True
        )
        assert check.returncode == 0, (prom.name, check.stdout, check.stderr)
