"""One real systemd host, the README's install section word for word: every timer scheduled,
every unit green as `m10jobs`, its metrics served by Debian's node_exporter, a failure visible
at `journalctl -p err` with its handler succeeding, an operator's hand run harmless to the next
timer run, uninstall complete."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import pytest

from m10jobs.edges.metrics import SAMPLE_LINE, metrics_path
from m10jobs.registry import jobs
from tests.system import steps
from tests.system.harness import UPPER, Host, cluster, phase

pytestmark = pytest.mark.timeout(300)

SCRIPTS = sorted(job.script for job in jobs())
OUTBOX = "m10-outbox-processor.service"
# Every path the host has written so far (its overlay's upper layer; whiteouts, i.e. paths
# deleted, are character devices and left out).
SNAPSHOT = f"cd {UPPER} && find . -xdev ! -type c | cut -c2-"
RUNTIME = (
    "/var/log/journal",
    "/var/lib/systemd",
    "/var/lib/postgresql",
    "/var/log/postgresql",
    "/var/lib/redis",
    "/var/log/redis",
    "/root/.cache",
    "/var/cache",
    "/var/tmp",
)


def written(host: Host) -> set[str]:
    """Paths the host created that the machine (its overlay's lower layer) does not have,
    runtime state left out."""
    return {
        p
        for p in host.out(SNAPSHOT).splitlines()
        if p and not p.startswith(RUNTIME) and not os.path.lexists(p)
    }


def unit_status(host: Host, unit: str) -> dict[str, str]:
    return host.show(unit, "Result", "ExecMainStatus", "ActiveState", "InvocationID")


def job_journal(host: Host, script: str, *flags: str) -> list[dict[str, str]]:
    """The job's own journal entries (not systemd's lines about its unit)."""
    text = host.out(f"journalctl -u {script}.service -o json --no-pager {' '.join(flags)}")
    entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [e for e in entries if e.get("SYSLOG_IDENTIFIER") == script]


def wait_finished(host: Host, unit: str, timeout: float = 60, after: str = "") -> dict[str, str]:
    """The unit's outcome once a run other than invocation `after` has ended."""
    deadline = time.monotonic() + timeout
    while True:
        status = unit_status(host, unit)
        if status["InvocationID"] not in ("", after) and status["ActiveState"] in (
            "inactive",
            "failed",
        ):
            return status
        assert time.monotonic() < deadline, f"{unit} did not finish: {status}"
        time.sleep(0.2)


def outbox_restarted(host: Host, count: int, timeout: float = 60) -> int:
    """Wait until systemd has restarted the outbox unit `count` times in all (each restart:
    a pass that exited 0 after its linger); NRestarts."""
    deadline = time.monotonic() + timeout
    while True:
        status = host.show(OUTBOX, "NRestarts", "ActiveState", "Result")
        if int(status["NRestarts"]) >= count:
            return int(status["NRestarts"])
        assert status["Result"] == "success" and time.monotonic() < deadline, (
            status,
            host.out(f"journalctl -u {OUTBOX} -n 12 -o cat --no-pager"),
        )
        time.sleep(0.2)


def run_ids(host: Host, since: str) -> list[str]:
    """The outbox passes' run_ids (each pass logs its own), in journal order."""
    found = []
    for entry in job_journal(host, "m10-outbox-processor", "--since", f"'{since}'"):
        with contextlib.suppress(ValueError, TypeError):
            run_id = json.loads(entry["MESSAGE"]).get("run_id")
            if run_id and run_id not in found:
                found.append(run_id)
    return found


TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
"""node_exporter's textfile directory as Debian's package ships it (its default
--collector.textfile.directory), where `make install` points the units by default."""
NODE_EXPORTER = "prometheus-node-exporter.service"


def node_exporter_serves(host: Host, ran: dict[str, str]) -> None:
    """After the timers' units ran (`ran`: script -> its exit status): each job's textfile is
    in node_exporter's directory, readable by node_exporter's user (`prometheus`, not in
    the m10jobs group), well formed, and Debian's node_exporter, running since boot with
    its defaults, serves every job's series without a scrape error."""
    steps.says(TEXTFILE_DIR)
    files = {metrics_path(TEXTFILE_DIR, s): s for s in ran}
    listed = set(host.out(f"ls -1 {TEXTFILE_DIR}").splitlines())
    missing = sorted(p.name for p in files if p.name not in listed)
    assert not missing, f"no metrics file for {missing} in {TEXTFILE_DIR}: {sorted(listed)}"
    groups = host.out("id -nG prometheus").split()
    assert "m10jobs" not in groups, groups  # what it reads, it reads as "other"
    promtool = host.sh("command -v promtool", check=False).returncode == 0
    for path, script in files.items():
        text = host.out(f"runuser -u prometheus -- cat {path}")
        samples = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
        bad = [ln for ln in samples if not SAMPLE_LINE.match(ln)]
        assert samples and not bad, (path.name, bad or text)
        assert f'm10_job_last_exit_code{{job="{script}"}} {ran[script]}' in samples, text
        if promtool:  # exit 1: it does not parse; 3: it parses, with lint findings (printed)
            check = host.sh(f"promtool check metrics < {path}", check=False)
            assert check.returncode in (0, 3), (path.name, check.stdout, check.stderr)
            if check.returncode:
                print(f"promtool lint, {path.name}: {check.stderr.strip()}", flush=True)

    assert host.out(f"systemctl is-active {NODE_EXPORTER}", check=False) == "active", host.out(
        f"systemctl status {NODE_EXPORTER} --no-pager; journalctl -u {NODE_EXPORTER} "
        "-n 20 -o cat --no-pager",
        check=False,
    )
    scraped = host.out("curl -sf --max-time 10 http://localhost:9100/metrics").splitlines()
    assert "node_textfile_scrape_error 0" in scraped, [
        ln for ln in scraped if ln.startswith("node_textfile")
    ]
    read = {
        ln.split('file="', 1)[1].split('"', 1)[0]
        for ln in scraped
        if ln.startswith("node_textfile_mtime_seconds{")
    }
    assert {p.name for p in files} <= {Path(f).name for f in read}, read
    succeeded = {
        ln.split('job="', 1)[1].split('"', 1)[0]
        for ln in scraped
        if ln.startswith("m10_job_last_success_timestamp_seconds{")
    }
    wanted = {s for s, code in ran.items() if code == "0"}
    assert wanted and wanted <= succeeded, (sorted(wanted - succeeded), sorted(succeeded))


def outbox_hands_over(host: Host) -> None:
    """On the real systemd: a pass lingers linger_seconds, exits 0 and systemd starts the
    next one by itself (Restart=on-success); events enqueued across the hand-overs all
    reach the stream; `systemctl stop` ends the chain.  The caller has stopped the timer,
    so only the restart can start a pass."""
    host.sh(f"systemctl start {OUTBOX}")  # a no-op while the chain runs
    since = host.out("date '+%Y-%m-%d %H:%M:%S'")
    first = outbox_restarted(host, 0)
    keys = []
    end = time.monotonic() + 3 * (steps.OUTBOX_LINGER_S + 1)
    while time.monotonic() < end:  # across at least two hand-overs
        keys.append(f"handover-{len(keys)}")
        host.psql(
            "SELECT m10_recovery.enqueue_outbox('system.handover', '{}'::jsonb, "
            f"NULL, NULL, '{keys[-1]}')"
        )
        time.sleep(0.1)
    restarts = outbox_restarted(host, first + 2)
    deadline = time.monotonic() + 30
    while True:
        stream = host.python(
            "import json, os, redis; r = redis.Redis.from_url(os.environ["
            "'M10_REDIS_URL'], decode_responses=True); print(json.dumps(["
            "f['idempotency_key'] for _, f in r.xrange('m10:outbox')]))"
        )
        assert isinstance(stream, list)
        got = [k for k in stream if k.startswith("handover-")]
        if sorted(got) == sorted(keys) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sorted(got) == sorted(keys), f"{len(keys) - len(set(got))} events missing"
    assert len(got) == len(set(got)), "an event was published twice"
    passes = run_ids(host, since)
    assert len(passes) >= 3, f"one pass per hand-over expected, saw {passes}"

    # `systemctl stop` ends the chain: the lease is released and nothing restarts.
    host.sh(f"systemctl stop {OUTBOX}")
    stopped = host.show(OUTBOX, "ActiveState", "NRestarts")
    assert stopped["ActiveState"] == "inactive", stopped
    assert int(stopped["NRestarts"]) >= restarts
    time.sleep(3 * (steps.OUTBOX_LINGER_S + 1))  # several hand-overs' worth
    later = host.show(OUTBOX, "ActiveState", "NRestarts", "Result")
    assert (later["ActiveState"], later["NRestarts"]) == ("inactive", stopped["NRestarts"]), later
    assert later["Result"] == "success", later  # a stop is no failure
    held = host.psql(
        "SELECT count(*) FROM m10_recovery.distributed_locks "
        "WHERE lock_name = 'm10:outbox_processor'"
    )
    assert held == "0", "the stopped pass left its lease"


def test_readme_install_on_one_host(wheelhouse: Path, tmp_path: Path) -> None:
    with cluster(["m10-solo"], tmp_path) as c:
        host = c.server
        print(f"boot: {host.boot_seconds:.1f}s")
        s3 = c.start_s3()
        readme = steps.Install.from_readme()
        with phase("database host"):
            steps.serve_database(host)
        before = written(host)
        with phase("README: install"):
            steps.run_lines(host, readme.install, wheelhouse)
        installed = written(host) - before
        assert "/opt/m10jobs/bin/m10" in installed, sorted(installed)[:20]
        with phase("README: database, configuration, timers"):
            steps.run_lines(host, readme.database, wheelhouse)
            steps.add_environment(host, steps.environment(s3))
            steps.short_linger(host)
            steps.run_lines(host, readme.configure, wheelhouse)
        steps.create_bucket(host)

        # Every timer is scheduled.
        listed = host.out("systemctl list-timers --all --no-legend --plain")
        scheduled = {
            word for line in listed.splitlines() for word in line.split() if word.endswith(".timer")
        }
        assert {f"{s}.timer" for s in SCRIPTS} <= scheduled, listed

        # Every service, started by hand, succeeds as m10jobs.
        services = [f"{s}.service" for s in SCRIPTS]
        with phase("every service once"):
            host.sh("systemctl start " + " ".join(services), check=False, timeout=280)
        uid = host.out("id -u m10jobs")
        failed = {}
        # The outbox unit's start returns at exec (Type=exec): its first pass has succeeded
        # once systemd has restarted it (Restart=on-success; a failure is not restarted).
        outbox_restarted(host, 1)
        for script in SCRIPTS:
            status = unit_status(host, f"{script}.service")
            if status["Result"] != "success" or status["ExecMainStatus"] not in ("0", "75"):
                failed[script] = status | {
                    "journal": host.out(f"journalctl -u {script}.service -n 8 -o cat --no-pager")
                }
            uids = {e["_UID"] for e in job_journal(host, script)}
            assert uids == {uid}, f"{script} ran as uid {uids}, m10jobs is {uid}"
        assert not failed, json.dumps(failed, indent=1)

        # ... and wrote their metrics where Debian's node_exporter reads them, which serves them.
        with phase("node_exporter serves the jobs' metrics"):
            ran = {s: unit_status(host, f"{s}.service")["ExecMainStatus"] for s in SCRIPTS}
            node_exporter_serves(host, ran)

        # The outbox's timer stays stopped until Redis is back: only the restart, and then
        # only this test, starts a pass.
        timer = OUTBOX.replace(".service", ".timer")
        host.sh(f"systemctl stop {timer}")
        with phase("the outbox unit hands over by restarting"):
            outbox_hands_over(host)

        # A job made to fail: its reason at priority err, its OnFailure= handler succeeds.
        # (The outbox chain is stopped: the start below begins a pass, which fails, and a
        # failed pass is not restarted.)
        host.sh("systemctl stop redis-server")
        host.psql("SELECT m10_recovery.enqueue_outbox('system.test', '{}'::jsonb)")
        since = f"--since=@{host.out('date +%s').strip()}"
        host.sh(f"systemctl start {OUTBOX}")
        # A pass that finds Redis down exits 69 and its unit starts the next one a few
        # seconds later (RestartForceExitStatus=69), never waiting for the timer nor going
        # "failed": it carries on by itself once Redis is back.  Two passes said why.
        deadline = time.monotonic() + 60
        while True:
            errors = job_journal(host, "m10-outbox-processor", "-p", "err", since)
            lines = [json.loads(e["MESSAGE"]) for e in errors]  # JSON stays JSON
            if len([line for line in lines if "redis" in line["message"].lower()]) >= 2:
                break
            assert time.monotonic() < deadline, (lines, unit_status(host, OUTBOX))
            time.sleep(0.5)
        assert unit_status(host, OUTBOX)["ActiveState"] != "failed"
        # A oneshot job failing on the same cause: reason at priority err, OnFailure= runs.
        synthetic = "m10-synthetic-traffic.service"
        before = unit_status(host, synthetic)["InvocationID"]
        host.sh(f"systemctl start {synthetic}", check=False)
        status = wait_finished(host, synthetic, after=before)
        assert status["Result"] == "exit-code" and status["ExecMainStatus"] not in ("0", "75")
        assert job_journal(host, "m10-synthetic-traffic", "-p", "err")
        handler = wait_finished(host, "m10-failure@m10-synthetic-traffic.service.service")
        assert (handler["Result"], handler["ExecMainStatus"]) == ("success", "0"), handler
        host.sh("systemctl start redis-server")
        deadline = time.monotonic() + 60  # the outbox's own next restart publishes it
        while (
            host.psql(
                "SELECT count(*) FROM m10_recovery.outbox WHERE event_type = 'system.test' "
                "AND status <> 'published'"
            ).strip()
            != "0"
        ):
            assert time.monotonic() < deadline, unit_status(host, OUTBOX)
            time.sleep(0.5)
        host.sh(f"systemctl start {timer}")

        # The runbook's hand run as root leaves nothing the next timer run trips over.
        steps.says(steps.HAND_RUN, doc=steps.RUNBOOK)
        again = ["m10-canary", "m10-daily-stats", "m10-retry-r2-fallbacks", "m10-maintenance"]
        for script in again:
            host.sh(steps.HAND_RUN.replace("JOB", script))
        foreign = host.out("find /var/lib/m10jobs /var/log/m10 ! -user m10jobs")
        assert not foreign, f"hand runs left files the service user does not own:\n{foreign}"
        host.sh("systemctl start " + " ".join(f"{s}.service" for s in again), check=False)
        for script in again:
            status = unit_status(host, f"{script}.service")
            assert status["Result"] == "success", (script, status)

        # Uninstall: nothing install put there survives but /etc/m10jobs; no timer enabled.
        steps.uninstall(host)
        left = sorted(p for p in installed & written(host) if not p.startswith(steps.KEPT))
        assert not left, f"make uninstall left {left}"
        units = host.out(
            "systemctl list-unit-files --no-legend --plain 'm10*' 'aos-*'", check=False
        )
        assert not units, units
        timers = host.out("systemctl list-timers --all --no-legend --plain")
        assert "m10" not in timers and "aos-" not in timers, timers
        links = host.out("find /etc/systemd/system \\( -name 'm10*' -o -name 'aos-*' \\)")
        assert not links, links
