"""$M10_METRICS_DIR/m10_<job>.prom (docs/contract.md, "Files"): one m10_ prefix, and
the file an earlier release named m10_m10_<job>.prom is taken over once, not left."""

from __future__ import annotations

from pathlib import Path

import pytest

from m10jobs.edges.metrics import metrics_path, parse, write_job_metrics
from m10jobs.registry import jobs


@pytest.mark.parametrize(
    ("script", "name"),
    [
        ("m10-canary", "m10_canary.prom"),
        ("m10-maintenance", "m10_maintenance.prom"),
        ("aos-cost-snapshot-daily", "m10_aos_cost_snapshot_daily.prom"),
    ],
)
def test_one_prefix(tmp_path: Path, script: str, name: str) -> None:
    assert metrics_path(tmp_path, script) == tmp_path / name


def test_no_job_gets_the_prefix_twice(tmp_path: Path) -> None:
    names = [metrics_path(tmp_path, j.script).name for j in jobs()]
    assert not [n for n in names if n.startswith("m10_m10_")]
    assert len(set(names)) == len(names)


def _values(path: Path) -> dict[str, float]:
    return {g.name: g.value for g in parse(path.read_text()) if not g.labels}


def test_the_first_run_after_an_upgrade_takes_over_the_old_file(tmp_path: Path) -> None:
    legacy = tmp_path / "m10_m10_canary.prom"
    legacy.write_text(
        "# TYPE m10_job_last_success_timestamp_seconds gauge\n"
        'm10_job_last_success_timestamp_seconds{job="m10-canary"} 1000\n'
    )
    # a skipped run keeps the last success it finds: the old file's
    path = write_job_metrics(
        tmp_path, "m10-canary", exit_code=75, started=2000, duration=1, succeeded=False
    )
    assert path == tmp_path / "m10_canary.prom"
    assert not legacy.exists()
    assert _values(path)["m10_job_last_success_timestamp_seconds"] == 1000


def test_an_old_file_beside_a_new_one_is_removed(tmp_path: Path) -> None:
    write_job_metrics(tmp_path, "m10-canary", exit_code=0, started=1, duration=1, succeeded=True)
    legacy = tmp_path / "m10_m10_canary.prom"
    legacy.write_text("stale\n")
    write_job_metrics(tmp_path, "m10-canary", exit_code=0, started=5, duration=1, succeeded=True)
    assert not legacy.exists()
    assert sorted(p.name for p in tmp_path.glob("*.prom")) == ["m10_canary.prom"]
