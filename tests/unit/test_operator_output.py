"""What `m10 jobs` and `m10 flows` print: headers, the project's own names, no repeats."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from m10jobs.cli.admin import main
from m10jobs.registry import jobs


def test_jobs_has_a_header_and_each_lease_once() -> None:
    out = CliRunner().invoke(main, ["jobs"]).output
    lines = out.splitlines()
    assert re.fullmatch(r"SCRIPT\s+SCOPE\s+LEASES\s+SCHEDULE\s+TASKS", lines[0])
    assert len(lines) == 1 + len(jobs())
    maintenance = next(line for line in lines if line.startswith("m10-maintenance "))
    leases = re.split(r"\s{2,}", maintenance)[2]
    assert leases == (
        "reclaim_gc, dl_reconcile, matview_*, retention_cleanup, retention_cleanup@<hostname>"
    )


def test_flows_names_our_own_parts_and_groups_tables_by_schema() -> None:
    out = CliRunner().invoke(main, ["flows"]).output
    assert ".py" not in out  # no seed file names as producers or consumers
    sections = re.split(r"\n\n", out.strip())
    for section in sections:
        title, header = section.splitlines()[:2]
        assert re.fullmatch(r"\s+NAME\s+PRODUCER\s+CONSUMERS / LOCATION", header), section
        if "(m10_recovery)" in title:
            assert "aos_cost." not in section, section
    assert any(
        s.startswith("Cost tables (aos_cost") and "aos_cost.anomalies" in s for s in sections
    )


def test_every_script_has_version() -> None:
    """--version on m10 and on every job's console script: the installed release (the
    package metadata, built from m10jobs.__version__) and the schema range it runs on."""
    from importlib.metadata import version

    from m10jobs import release
    from m10jobs.cli import entry

    commands = {"m10": main} | {
        j.script: getattr(entry, j.script.replace("-", "_")) for j in jobs()
    }
    for script, command in commands.items():
        result = CliRunner().invoke(command, ["--version"], prog_name=script)
        assert result.exit_code == 0, (script, result.output)
        assert result.output == (
            f"{script} (m10jobs) {version('m10jobs')}; database schema "
            f"{release.REQUIRES}-{release.knows()} (needs migration {release.REQUIRES}, "
            f"knows up to {release.knows()})\n"
        )


def test_units_render_needs_output_outside_a_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    refused = CliRunner().invoke(main, ["units", "render"])
    assert refused.exit_code == 2 and "give --output DIR" in refused.output
    assert list(tmp_path.iterdir()) == []
    ok = CliRunner().invoke(main, ["units", "render", "--output", str(tmp_path / "out")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "out" / "m10-canary.timer").is_file()


def test_units_render_defaults_to_systemd_inside_a_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "m10jobs"\n')
    (tmp_path / "m10jobs").mkdir()
    (tmp_path / "m10jobs" / "registry.py").write_text("")
    monkeypatch.chdir(tmp_path)
    ok = CliRunner().invoke(main, ["units", "render"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "systemd" / "m10-canary.service").is_file()


def test_status_reads_systemd_formats() -> None:
    """The shapes systemctl prints (list-timers JSON since v246, show --timestamp=unix
    since v251), parsed as `m10 status` needs them; older formats read as unknown."""
    from m10jobs.edges import systemd

    timers = systemd.parse_list_timers(
        '[{"next": 1589485390891904, "left": 1589485390891904, "last": 1589481783203015,'
        ' "passed": 1589481783203015, "unit": "m10-canary.timer",'
        ' "activates": "m10-canary.service"},'
        ' {"next": 0, "left": 0, "last": null, "passed": null, "unit": "aos-cost.timer",'
        ' "activates": "aos-cost.service"}]'
    )
    assert timers == {"m10-canary.timer": 1589485390.891904, "aos-cost.timer": None}
    assert systemd.parse_list_timers("") == {} and systemd.parse_list_timers("garbage") == {}
    shown = systemd.parse_systemctl_show(
        "Id=m10-canary.service\nExecMainStatus=69\nExecMainExitTimestamp=@1639232757\n\n"
        "Id=m10-rollback.service\nExecMainStatus=0\nExecMainExitTimestamp=\n"
    )
    assert shown["m10-canary.service"]["ExecMainStatus"] == "69"
    assert systemd.timestamp(shown["m10-canary.service"]["ExecMainExitTimestamp"]) == 1639232757
    assert systemd.timestamp(shown["m10-rollback.service"]["ExecMainExitTimestamp"]) is None
    assert systemd.timestamp("Sat 2021-12-11 15:25:57 CET") is None


def test_status_schedule_intervals() -> None:
    from m10jobs.health import human
    from m10jobs.health.runs import schedule_seconds

    assert [
        schedule_seconds(s)
        for s in ("minutely", "*:0/5", "*:1/5", "*:0/30", "hourly", "daily", "*-*-* 00:05:00")
    ] == [60, 300, 300, 1800, 3600, 86400, 86400]
    assert [human(s) for s in (5, 119, 600, 7260, 200000, -30)] == [
        "5s",
        "119s",
        "10m",
        "2h01m",
        "2d7h",
        "-30s",
    ]
