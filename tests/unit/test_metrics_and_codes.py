from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from m10jobs.edges import metrics
from m10jobs.edges.metrics import Gauge, write_gauges, write_job_metrics
from m10jobs.errors import combine_exit_codes

SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*\{([a-z_]+="(?:[^"\\]|\\.)*",?)*\} -?[0-9.e+-]+$')


def parse(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) \S+ .+$", line)
            continue
        assert SAMPLE.match(line), line
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def test_textfile_keeps_last_success_across_a_failed_run(tmp_path: Path) -> None:
    write_job_metrics(
        tmp_path,
        "m10-canary",
        exit_code=0,
        started=1000.0,
        duration=2.0,
        succeeded=True,
        gauges=[Gauge("m10_canary_score", 0.9, "score", {"target": 'a"b'})],
    )
    first = parse((tmp_path / "m10_canary.prom").read_text())
    assert first['m10_job_last_success_timestamp_seconds{job="m10-canary"}'] == 1002.0
    assert first['m10_canary_score{job="m10-canary",target="a\\"b"}'] == 0.9
    write_job_metrics(
        tmp_path, "m10-canary", exit_code=69, started=2000.0, duration=1.0, succeeded=False
    )
    second = parse((tmp_path / "m10_canary.prom").read_text())
    assert second['m10_job_last_success_timestamp_seconds{job="m10-canary"}'] == 1002.0
    assert second['m10_job_last_exit_code{job="m10-canary"}'] == 69


@pytest.mark.parametrize(
    "codes, expected",
    [
        ([], 0),
        ([0], 0),
        ([75], 75),
        ([75, 75], 75),
        ([0, 75], 0),
        ([0, 1, 75], 1),
        ([69], 69),
        ([0, 69, 69], 69),
        ([69, 1], 1),
        ([65, 69], 1),
        ([78], 78),
    ],
)
def test_combined_exit_code(codes: list[int], expected: int) -> None:
    assert combine_exit_codes(codes) == expected


def test_skipped_runs_never_count_as_success_and_keep_the_pass_gauges(tmp_path: Path) -> None:
    """Several hosts: the leader's degraded run sets a gauge; the others' skipped runs (75)
    move "last skipped", not "last success", and leave the gauge set."""
    prom = tmp_path / "m10_maintenance.prom"
    write_job_metrics(
        tmp_path, "m10-maintenance", exit_code=0, started=100.0, duration=1.0, succeeded=True
    )
    write_job_metrics(
        tmp_path,
        "m10-maintenance",
        exit_code=1,
        started=200.0,
        duration=1.0,
        succeeded=False,
        gauges=[Gauge("m10_dead_letters_abandoned", 2)],
    )
    for started in (300.0, 400.0):
        write_job_metrics(
            tmp_path,
            "m10-maintenance",
            exit_code=75,
            started=started,
            duration=1.0,
            succeeded=False,
        )
    s = parse(prom.read_text())
    assert s['m10_job_last_success_timestamp_seconds{job="m10-maintenance"}'] == 101.0
    assert s['m10_job_last_skipped_timestamp_seconds{job="m10-maintenance"}'] == 401.0
    assert s['m10_job_last_exit_code{job="m10-maintenance"}'] == 75
    assert s['m10_dead_letters_abandoned{job="m10-maintenance"}'] == 2


TRICKY = ["C:\\new", "\\", '\\"', "\n", 'a"b', "C:\\\\temp\\new\\n", "end\\", "plain"]


@pytest.mark.parametrize("value", TRICKY)
def test_label_values_round_trip_through_the_file(tmp_path: Path, value: str) -> None:
    path = tmp_path / "m10_x.prom"
    write_gauges(path, "x", [Gauge("m10_x", 1, "x", {"path": value})])
    [back] = metrics.parse(path.read_text())
    assert back.labels == {"path": value}
    # the reference parser reads what we wrote the same way
    [family] = text_string_to_metric_families(path.read_text())
    assert family.samples[0].labels == {"job": "x", "path": value}


def test_merging_keeps_other_label_values_intact_run_after_run(tmp_path: Path) -> None:
    path = tmp_path / "m10_units.prom"
    others = [Gauge("m10_x", i, "x", {"path": v}) for i, v in enumerate(TRICKY)]
    write_gauges(path, "x", others)
    for n in range(3):  # each merge re-reads and rewrites the other label sets
        write_gauges(path, "x", [Gauge("m10_x", 100 + n, "x", {"path": "new"})], merge=True)
    got = {g.labels["path"]: g.value for g in metrics.parse(path.read_text())}
    assert got == {**{v: float(i) for i, v in enumerate(TRICKY)}, "new": 102.0}
