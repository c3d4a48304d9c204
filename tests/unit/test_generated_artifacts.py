"""Units, docs/flows.md, the config example/reference and pyproject are derived from
the registry and committed current."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from m10jobs.configdoc import rendered
from m10jobs.flows import markdown
from m10jobs.registry import Job, jobs
from m10jobs.units import RETRY_UNAVAILABLE_S, render_all, stale

ROOT = Path(__file__).resolve().parents[2]
SEED_SERVICES = {  # seed section 4: name -> (OnCalendar, After= must include)
    "m10-maintenance": ("*:0/5", {"postgresql.service", "redis-server.service"}),
    "m10-daily-stats": ("*-*-* 00:05:00", {"postgresql.service"}),
    "m10-synthetic-traffic": ("*:0/30", {"postgresql.service", "redis-server.service"}),
    "aos-cost-snapshot-hourly": ("hourly", {"network-online.target"}),
    "aos-cost-snapshot-daily": (
        "daily",
        {"network-online.target", "aos-cost-snapshot-hourly.service"},
    ),
}


def unit(text: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(text)
    return cp


def test_committed_units_are_current() -> None:
    assert stale(ROOT / "systemd", render_all()) == [], "run `m10 units render` and commit"


def test_committed_config_example_and_reference_are_current() -> None:
    for path, text in rendered().items():
        assert (ROOT / path).read_text() == text, f"{path} is stale: run `m10 config render`"


def test_committed_flow_inventory_is_current() -> None:
    assert (ROOT / "docs" / "flows.md").read_text() == markdown(), (
        "run `m10 flows --format markdown > docs/flows.md`"
    )


@pytest.mark.parametrize("job", jobs(), ids=lambda j: j.script)
def test_every_job_has_a_bounded_service_and_a_persistent_timer(job: Job) -> None:
    units = render_all()
    svc = unit(units[f"{job.script}.service"])
    tmr = unit(units[f"{job.script}.timer"])
    if job.restart:  # systemd 252 refuses Restart= on a oneshot unit
        assert svc["Service"]["Type"] == "exec"
        bound = svc["Service"]["RuntimeMaxSec"]  # a Type=exec start completes at exec
        assert "TimeoutStartSec" not in svc["Service"]
    else:
        assert svc["Service"]["Type"] == "oneshot"
        bound = svc["Service"]["TimeoutStartSec"]
        assert "Restart" not in svc["Service"]
    assert svc["Service"]["SuccessExitStatus"] == "75 SIGTERM SIGINT"
    assert int(bound) < (job.ttl_seconds or 300)
    assert svc["Service"]["ExecStart"].split() == [f"/opt/m10jobs/bin/{job.script}", *job.exec_args]
    declared = {o for opt in job.options for o in opt.opts}
    assert {a for a in job.exec_args if a.startswith("-")} <= declared, job.exec_args
    assert svc["Service"]["EnvironmentFile"] == "-/etc/m10jobs/env"
    assert svc["Unit"]["OnFailure"] == "m10-failure@%n.service"
    assert tmr["Timer"]["Persistent"] == "true"


def test_the_outbox_unit_restarts_a_lingering_pass_but_not_a_standby_or_a_failure() -> None:
    units = render_all()
    svc = unit(units["m10-outbox-processor.service"])
    assert svc["Service"]["ExecStart"] == "/opt/m10jobs/bin/m10-outbox-processor --linger"
    assert svc["Service"]["Restart"] == "on-success"  # not on-failure: failures back off
    assert svc["Service"]["RestartSec"] == "0"  # the hand-over gap is one start-up
    # 75 (lease held elsewhere) counts as success, so without this a standby would spin
    assert svc["Service"]["RestartPreventExitStatus"] == "75"
    assert svc["Unit"]["StartLimitIntervalSec"] == "0"  # back-to-back passes are the norm
    # 69 (PostgreSQL/Redis unreachable) restarts a few seconds later, not at the next tick
    assert svc["Service"]["RestartForceExitStatus"] == "69"
    assert svc["Service"]["ExecStopPost"] == (
        f"/bin/sh -c 'test \"$$EXIT_STATUS\" != 69 || exec sleep {RETRY_UNAVAILABLE_S}'"
    )
    assert 1 <= RETRY_UNAVAILABLE_S <= 5  # back within 10 s of the dependency
    timer = unit(units["m10-outbox-processor.timer"])["Timer"]
    assert (timer["OnCalendar"], timer["RandomizedDelaySec"]) == ("minutely", "0")
    others = [
        n
        for n, text in units.items()
        if n.endswith(".service") and n != "m10-outbox-processor.service"
    ]
    assert all("Restart=" not in units[n] and "StartLimit" not in units[n] for n in others)


def test_the_seed_services_keep_names_schedules_and_order() -> None:
    units = render_all()
    for name, (calendar, after) in SEED_SERVICES.items():
        assert unit(units[f"{name}.timer"])["Timer"]["OnCalendar"] == calendar
        assert after <= set(unit(units[f"{name}.service"])["Unit"]["After"].split())
    daily_stats = unit(units["m10-daily-stats.timer"])["Timer"]
    assert daily_stats["RandomizedDelaySec"] == "0"  # 00:05 exactly


def test_the_sandbox_lets_jobs_write_to_the_rendered_metrics_dir() -> None:
    default = render_all()["m10-canary.service"]
    assert "ReadWritePaths=-/var/lib/prometheus/node-exporter" in default
    assert "M10_METRICS_DIR=/var/lib/prometheus/node-exporter\n" in default
    units = render_all(metrics_dir="/srv/metrics")
    for name, text in units.items():
        if name.endswith(".service"):
            assert "ReadWritePaths=-/srv/metrics\n" in text, name
            # metrics are on by default, written where the sandbox allows (issue 24)
            env = unit(text)["Service"]["Environment"].split()
            assert "M10_METRICS_DIR=/srv/metrics" in env, name
            assert "node-exporter" not in text, name


def test_toml_examples_in_the_docs_are_valid_config() -> None:
    import re
    import tomllib

    from m10jobs.config import load_config
    from m10jobs.registry import sections

    blocks = [
        (path.name, block)
        for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
        for block in re.findall(r"```toml\n(.*?)```", path.read_text(), re.S)
    ]
    assert len(blocks) >= 3
    base = load_config(None, env={})
    for name, block in blocks:
        cfg = type(base)(base.values, base.origins, tomllib.loads(block), name)
        assert cfg.problems(sections()) == [], f"a ```toml block in {name} is not valid config"
