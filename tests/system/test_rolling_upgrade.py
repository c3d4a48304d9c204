"""A rolling upgrade on three booted hosts, as README's "Upgrading" and CHANGELOG.md's
"Upgrading from 0.1.0" tell an operator to do it.

The previous release (m10jobs.release.PREVIOUS, built from its commit: no tag needed) is
installed on three hosts with its own README's install block and `make install`, every timer
enabled, events enqueued all along.  Then host by host: its timers and jobs stopped, this
release's `make install`, its timers started; `m10 db migrate` once, after the first host.
Then one host goes back to the previous release on the migrated schema.

What must hold throughout: every enqueued event reaches the stream exactly once (no
duplicate event_id, none lost); every job exit on every host is 0 or 75, but for the
documented 78 ("run `m10 db migrate`") of a host running this release before the migration
(read from each host's journal: systemd logs every end it counts as a failure).  The
previous release keeps running on the migrated schema (CHANGELOG: "Hosts still on 0.1.0
keep running on the migrated schema"), so the downgraded host's jobs exit 0/75 too.  Stats
and cost end complete."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from m10jobs.release import PREVIOUS, REQUIRES, VERSION, knows
from tests.system import steps
from tests.system.harness import CHECKOUT, Host, HostError, cluster, phase

pytestmark = pytest.mark.timeout(420)

NAMES = ["m10-a", "m10-b", "m10-c"]
JOB_UNITS = "'m10-*.service' 'aos-*.service'"
MIGRATE_HINT = "run `m10 db migrate`"
GRACE_S = 10.0
"""A 78 logged this long after `m10 db migrate` returned still counts as before it (a run
that checked the schema just before the migration committed)."""
KEY = "upgrade-"
EXIT = re.compile(r"Main process exited, code=exited, status=(\d+)")
KILLED = re.compile(r"Main process exited, code=(?:killed|dumped), status=(\S+)")
FAILED = re.compile(r"Failed with result '([\w-]+)'")
DRAIN_S = 240.0
"""How long a host's running jobs may take to finish once its timers are stopped."""


@pytest.fixture
def previous(wheelhouse: Path) -> Iterator[Path]:
    """The previous release's source tree (its own Makefile, README, units), and its wheel
    beside it, built from its commit by scripts/dev/build-release.sh.  Under /var/tmp:
    the hosts' overlay shows the machine's root (their /tmp is their own)."""
    known = subprocess.run(
        ["git", "-C", str(CHECKOUT), "cat-file", "-e", f"{PREVIOUS.commit}^{{commit}}"],
        capture_output=True,
    )
    if known.returncode != 0:
        pytest.skip(f"release {PREVIOUS.version} ({PREVIOUS.commit[:12]}) not in this clone")
    directory = Path(tempfile.mkdtemp(prefix="m10sys-prev-", dir="/var/tmp"))
    directory.chmod(0o755)
    try:
        done = subprocess.run(
            [
                "scripts/dev/build-release.sh",
                PREVIOUS.commit,
                str(directory / "wheels"),
                str(Path(sys.executable).with_name("pip")),
            ],
            cwd=CHECKOUT,
            env={**os.environ, "KEEP_SOURCE": str(directory / "src")},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        wheels = [p.name for p in (directory / "wheels").glob("m10jobs-*.whl")]
        assert wheels == [f"m10jobs-{PREVIOUS.version}-py3-none-any.whl"], wheels
        yield directory / "src"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Feed:
    """The application: enqueues a few events every ~second from the database host, as
    psql, for the whole roll; what it committed is what must be published."""

    server: Host
    keys: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        n = 0
        while not self.stop.wait(0.8):
            batch = [f"{KEY}{n + i}" for i in range(5)]
            try:
                self.server.psql(
                    "SELECT count(m10_recovery.enqueue_outbox('system.upgrade', "
                    "jsonb_build_object('k', k), NULL, NULL, k)) FROM unnest(ARRAY["
                    + ",".join(f"'{k}'" for k in batch)
                    + "]) AS k"
                )
            except (HostError, subprocess.TimeoutExpired) as e:
                self.errors.append(str(e)[:500])
                continue
            self.keys += batch
            n += len(batch)


@dataclass
class Timeline:
    """Which release each host ran since when, and when the migration ended: what judges
    a logged exit."""

    since: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    migrated_at: float = float("inf")

    def release(self, host: str, at: float) -> str:
        current = ""
        for start, release in self.since.get(host, []):
            if start <= at:
                current = release
        return current

    def allowed(self, host: str, at: float, status: str) -> bool:
        if status in ("0", "75"):
            return True
        return (
            status == "78"
            and self.release(host, at) == VERSION
            and at <= self.migrated_at + GRACE_S
        )


def exits(host: Host) -> list[tuple[float, str, str]]:
    """(time, unit, outcome) of every m10 job end systemd logged on the host as not a
    success: 'status=N', 'signal=X' or 'result=R'.  (A success, 0 or the units'
    SuccessExitStatus=75, is logged at debug level only: what is found here is what
    systemd counted as a failure, or a signal.)"""
    text = host.out(
        "journalctl _PID=1 -o json --no-pager --output-fields=UNIT,MESSAGE", timeout=120
    )
    found = []
    for line in text.splitlines():
        entry = json.loads(line)
        unit, message = entry.get("UNIT", ""), entry.get("MESSAGE", "")
        if not isinstance(message, str) or not unit.startswith(("m10-", "aos-")):
            continue
        at = int(entry["__REALTIME_TIMESTAMP"]) / 1e6
        if m := EXIT.search(message):
            found.append((at, unit, f"status={m.group(1)}"))
        elif m := KILLED.search(message):
            found.append((at, unit, f"signal={m.group(1)}"))
        elif (m := FAILED.search(message)) and m.group(1) != "exit-code":
            found.append((at, unit, f"result={m.group(1)}"))
    return found


def job_units(host: Host) -> list[str]:
    listed = host.out(f"systemctl list-unit-files --no-legend --plain {JOB_UNITS}")
    return sorted(ln.split()[0] for ln in listed.splitlines() if "@" not in ln.split()[0])


def run_round(hosts: list[Host]) -> dict[str, dict[str, str]]:
    """Every job service started at once on each host (as their timers would); each
    oneshot's ExecMainStatus (the outbox unit keeps running on its lease holder)."""

    def one(host: Host) -> dict[str, str]:
        units = job_units(host)
        host.sh("systemctl start " + " ".join(units), check=False, timeout=300)
        return {u: host.show(u, "ExecMainStatus")["ExecMainStatus"] for u in units}

    with ThreadPoolExecutor(len(hosts)) as pool:
        return dict(zip([h.name for h in hosts], pool.map(one, hosts), strict=True))


def stop_jobs(host: Host) -> None:
    """The operator's first step: no timer fires again, the outbox unit (which restarts
    itself while it holds the lease) is stopped, the oneshot jobs already running finish
    (stopping one mid-run would count as its failure: a oneshot killed by SIGTERM is not a
    clean exit for systemd)."""
    host.sh(
        "systemctl stop m10jobs.target 'm10-*.timer' 'aos-*.timer' m10-outbox-processor.service",
        timeout=300,
    )
    deadline = time.monotonic() + DRAIN_S
    while running := host.out(
        "systemctl list-units --no-legend --plain --state=active,activating,deactivating "
        f"{JOB_UNITS}"
    ):
        assert time.monotonic() < deadline, f"{host.name}: jobs still running:\n{running}"
        time.sleep(1)


def start_jobs(host: Host) -> None:
    host.sh("systemctl start m10jobs.target")
    timers = host.out("systemctl list-timers --all --no-legend --plain")
    units = job_units(host)
    missing = [u for u in units if u.removesuffix(".service") + ".timer" not in timers]
    assert not missing, (host.name, missing, timers)


def install(host: Host, tree: Path, wheelhouse: Path) -> str:
    steps.says("make install")
    return steps.run_lines(host, ["make install"], wheelhouse, checkout=tree)[0]


def version(host: Host) -> str:
    return host.out("m10 --version")


def published(server: Host) -> list[tuple[str, str]]:
    stream = server.python(
        "import json, os, redis; r = redis.Redis.from_url(os.environ['M10_REDIS_URL']); "
        "print(json.dumps([[f[b'event_id'].decode(), f[b'idempotency_key'].decode()] "
        "for _, f in r.xrange('m10:outbox')]))"
    )
    assert isinstance(stream, list)
    return [(e, k) for e, k in stream]


def wait_drained(server: Host, timeout: float = 150) -> None:
    """Every enqueued event published (a host's outbox timer fires each minute)."""
    deadline = time.monotonic() + timeout
    while True:
        pending = server.psql(
            f"SELECT count(*) FROM m10_recovery.outbox WHERE idempotency_key LIKE '{KEY}%' "
            "AND status <> 'published'"
        )
        if pending == "0":
            return
        assert time.monotonic() < deadline, f"{pending} events still not published"
        time.sleep(2)


def test_rolling_upgrade(wheelhouse: Path, previous: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    old = steps.Install.from_readme((previous / "README.md").read_text())
    timeline = Timeline()
    with cluster(NAMES, tmp_path) as c:
        print("boot: " + ", ".join(f"{h.name} {h.boot_seconds:.1f}s" for h in c.hosts))
        s3 = c.start_s3()
        server = c.server
        steps.serve_database(server)
        with phase(f"{PREVIOUS.version}: its README's install on every host"):
            with ThreadPoolExecutor(len(c.hosts)) as pool:
                list(
                    pool.map(
                        lambda h: steps.run_lines(h, old.install, wheelhouse, previous), c.hosts
                    )
                )
            steps.run_lines(server, old.database, wheelhouse, previous)
            for host in c.hosts:
                steps.short_linger(host)
                steps.add_environment(host, steps.environment(s3))
                steps.run_lines(host, old.configure, wheelhouse, previous)
                timeline.since[host.name] = [(time.time(), PREVIOUS.version)]
            steps.create_bucket(server)
        for host in c.hosts:
            assert PREVIOUS.version in version(host) and VERSION not in version(host)
        assert (
            server.psql("SELECT max(version) FROM m10_recovery.schema_migrations")[:3]
            == PREVIOUS.newest_migration
        )

        feed = Feed(server)
        feeder = threading.Thread(target=feed.run, daemon=True)
        feeder.start()
        rounds: list[tuple[str, dict[str, dict[str, str]]]] = []
        try:
            with phase(f"{PREVIOUS.version}: every job on every host"):
                rounds.append(("old", run_round(c.hosts)))

            for i, host in enumerate(c.hosts):
                with phase(f"{host.name}: stop, make install {VERSION}, start"):
                    stop_jobs(host)
                    said = install(host, CHECKOUT, wheelhouse)
                    timeline.since[host.name].append((time.time(), VERSION))
                    start_jobs(host)
                assert VERSION in version(host) and REQUIRES in version(host)
                if i == 0:
                    # Before the migration this release refuses the old schema, saying how.
                    assert MIGRATE_HINT in said, said
                    with phase(f"{host.name}: every job before the migration (78)"):
                        before = run_round([host])[host.name]
                    assert set(before.values()) <= {"78", "75", "0"}, before
                    assert before["m10-maintenance.service"] == "78", before
                    hint = host.out("journalctl -u m10-maintenance -o cat --no-pager")
                    assert MIGRATE_HINT in hint and "Traceback" not in hint, hint
                    with phase("m10 db migrate, once, mid-roll"):
                        steps.run_lines(
                            server,
                            [
                                ln
                                for ln in steps.Install.from_readme().database
                                if "db migrate" in ln
                            ],
                            wheelhouse,
                        )
                        timeline.migrated_at = time.time()
                    status = host.out("m10 db status")
                    assert re.search(r"^pending +none", status, re.M), status
                    assert f"schema        at {knows()}" in status, status
                    with phase(f"{PREVIOUS.version} hosts and {host.name} on the migrated schema"):
                        rounds.append(("migrated", run_round(c.hosts)))
                else:
                    assert "nothing to migrate" in said, said
                    with phase(f"{host.name}: every job on {VERSION}"):
                        rounds.append((f"{host.name} upgraded", run_round([host])))

            down = c.hosts[-1]
            with phase(f"{down.name}: back to {PREVIOUS.version} on the migrated schema"):
                stop_jobs(down)
                install(down, previous, wheelhouse)
                timeline.since[down.name].append((time.time(), PREVIOUS.version))
                start_jobs(down)
                assert PREVIOUS.version in version(down)
                rounds.append(("downgraded", run_round([down])))
        finally:
            feed.stop.set()
            feeder.join(timeout=30)

        with phase("drain"):
            wait_drained(server)

        # The outbox: every committed event in the stream exactly once.
        assert not feed.errors, feed.errors
        assert len(feed.keys) >= 100, f"only {len(feed.keys)} events enqueued"
        stream = published(server)
        ids = [e for e, _ in stream]
        assert len(ids) == len(set(ids)), "an event_id was published twice"
        mine = sorted(k for _, k in stream if k.startswith(KEY))
        assert mine == sorted(feed.keys), (
            f"lost {sorted(set(feed.keys) - set(mine))[:10]}, "
            f"twice {[k for k in set(mine) if mine.count(k) > 1][:10]}"
        )

        # Every job end on every host: 0/75, but the documented 78 before the migration.
        ends = {host.name: exits(host) for host in c.hosts}
        for name, found in ends.items():
            tally: dict[str, int] = {}
            for _, _, outcome in found:
                tally[outcome] = tally.get(outcome, 0) + 1
            print(f"{name}: job ends other than a clean 0: {tally}")
        refused = [u for _, u, outcome in ends[c.hosts[0].name] if outcome == "status=78"]
        assert "m10-maintenance.service" in refused, "the journal shows no refusal (78)"
        bad = [
            (
                host.name,
                datetime.fromtimestamp(at, UTC).isoformat(),
                unit,
                outcome,
                timeline.release(host.name, at),
            )
            for host in c.hosts
            for at, unit, outcome in ends[host.name]
            if not (
                outcome.startswith("status=")
                and timeline.allowed(host.name, at, outcome.removeprefix("status="))
            )
        ]
        assert not bad, "\n".join(map(str, bad))
        for label, rnd in rounds:
            for name, units in rnd.items():
                for unit, status in units.items():
                    assert status in ("0", "75"), (label, name, unit, status)

        # Maintenance ran on both releases; stats and cost complete.
        yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
        csv = f"/var/log/m10/m10_stats_{yesterday:%Y-%m}.csv"
        for host in c.hosts:
            days = {ln.split(",", 1)[0] for ln in host.out(f"cat {csv}").splitlines()[1:]}
            assert yesterday.isoformat() in days, (host.name, sorted(days)[-3:])
        gaps = server.psql(
            "SELECT count(*) FROM generate_series((SELECT min(period_start) FROM "
            "aos_cost.snapshot_periods WHERE granularity = 'hour'), date_trunc('hour', now()) "
            "- interval '1 hour', interval '1 hour') AS h WHERE NOT EXISTS (SELECT 1 FROM "
            "aos_cost.snapshot_periods p WHERE p.granularity = 'hour' AND p.period_start = h)"
        )
        assert gaps == "0", f"{gaps} finished hours without a cost snapshot"
        day = server.psql(
            "SELECT count(*) FROM aos_cost.snapshot_periods WHERE granularity = 'day' AND "
            "period_start = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' "
            "- interval '1 day'"
        )
        assert day == "1", "yesterday has no daily cost snapshot"
    print(f"rolling upgrade: {time.monotonic() - started:.0f}s, {len(feed.keys)} events")
