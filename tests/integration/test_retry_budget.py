"""m10-retry-r2-fallbacks works to its time budget: a backlog larger than one pass can
upload ends each pass with exit 1 and "N left, continuing next run", each pass makes
progress, and the backlog clears over passes.  A tiny budget stands in for the unit's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import boto3

from devenv.fallbacks import plant
from tests.stats_support import summary

LEFT = re.compile(r"time budget used up: (\d+) fallback upload\(s\) left, continuing next run")


def _store(env: dict[str, str]) -> Any:
    s3 = boto3.client(
        "s3",
        endpoint_url=env["M10_R2_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=env["M10_R2_BUCKET"])
    return s3


def _config(tmp_path: Path, budget: float, threads: int) -> str:
    path = tmp_path / "m10.toml"
    path.write_text(
        f"[retry_r2_fallbacks]\ntime_budget_seconds = {budget}\nconcurrent_uploads = {threads}\n"
    )
    return str(path)


def _pass(cli: Any, env: dict[str, str], config: str) -> tuple[int, int | None, dict[str, Any]]:
    proc = cli("m10-retry-r2-fallbacks", "--config", config, env=env, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr
    [task] = summary(proc.stdout)["tasks"]
    if proc.returncode == 0:
        return 0, None, task
    lines = [line for line in proc.stderr.splitlines() if "left, continuing next run" in line]
    assert len(lines) == 1, proc.stderr  # one line says it
    m = LEFT.search(lines[0])
    assert m, lines[0]
    return 1, int(m[1]), task


def test_a_backlog_drains_over_budgeted_passes(
    cli: Any, s3_env: dict[str, str], tmp_path: Path
) -> None:
    s3 = _store(s3_env)
    n = 300
    plant(Path(s3_env["M10_STATE_DIR"]) / "fallback-uploads", s3_env["M10_R2_BUCKET"], n)
    config = _config(tmp_path, 1.0, 4)
    total, passes, outcomes = 0, 0, []
    while True:
        code, left, task = _pass(cli, s3_env, config)
        outcomes.append(code)
        passes += 1
        uploaded = task["summary"]["uploaded"]
        assert uploaded > 0  # every pass makes progress
        total += uploaded
        if code == 0:
            break
        assert left == n - total, (left, n, total)  # what it says is left, is left
        assert task["summary"]["left"] == left
        assert passes < 40
    # the budget, not the backlog, ended the first pass; the last one found nothing left
    assert total == n and outcomes[0] == 1 and outcomes[-1] == 0
    listed = s3.get_paginator("list_objects_v2").paginate(Bucket=s3_env["M10_R2_BUCKET"])
    assert sum(len(page.get("Contents", [])) for page in listed) == n


def test_twenty_thousand_pending_end_each_pass_on_budget(
    cli: Any, s3_env: dict[str, str], tmp_path: Path
) -> None:
    """At scale: the pass (its scan of 20,000 metas included) still ends on its budget,
    reports what is left, and the next pass continues from there."""
    _store(s3_env)
    n = 20_000
    plant(Path(s3_env["M10_STATE_DIR"]) / "fallback-uploads", s3_env["M10_R2_BUCKET"], n)
    config = _config(tmp_path, 6, 8)
    code, first_left, task = _pass(cli, s3_env, config)
    assert code == 1 and task["summary"]["pending"] == n
    assert first_left is not None and 0 < first_left < n
    assert task["summary"]["uploaded"] == n - first_left
    code, second_left, task = _pass(cli, s3_env, config)
    assert code == 1 and second_left is not None and second_left < first_left
    assert task["summary"]["pending"] == first_left
