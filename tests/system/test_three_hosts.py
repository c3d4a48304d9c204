"""Three real systemd hosts (distinct host names) against one PostgreSQL + Redis, every timer
enabled on each, every service started on all three at once for several rounds.

What must hold whichever host wins which lease: leases never overlap (a trigger records every
lease row change) and are won by more than one host; host-local leases are held by their own
host; the outbox publishes every event exactly once; one failing canary verdict causes one
rollback cluster-wide; every host's fallback files are uploaded; a month's stats CSV is
complete on every host whichever host computed which day; a daily cost run never fails because
another host's hourly run holds its lease; `m10 history` on one host lists every run of every
host with its exit code."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from m10jobs.errors import ExitCode, combine_exit_codes
from m10jobs.registry import by_script, jobs
from tests.system import steps
from tests.system.harness import Cluster, Host, cluster, phase

pytestmark = pytest.mark.timeout(300)

NAMES = ["m10-a", "m10-b", "m10-c"]
SCRIPTS = sorted(job.script for job in jobs())
ROUNDS = 3
EVENTS_PER_ROUND = 40
ROLLBACK_LOG = "/var/lib/m10jobs/system-test-rollbacks"

AUDIT_SQL = """
CREATE TABLE public.m10sys_lease_audit (
    id bigserial PRIMARY KEY, op text NOT NULL, lock_name text NOT NULL,
    holder_id text NOT NULL, fencing_token bigint NOT NULL, acquired_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION public.m10sys_audit() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog AS $$
DECLARE r record;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    INSERT INTO public.m10sys_lease_audit
           (op, lock_name, holder_id, fencing_token, acquired_at, expires_at)
    VALUES (lower(TG_OP), r.lock_name, r.holder_id, r.fencing_token, r.acquired_at,
            r.expires_at);
    RETURN r;
END $$;
CREATE TRIGGER m10sys_audit AFTER INSERT OR UPDATE OR DELETE
    ON m10_recovery.distributed_locks FOR EACH ROW EXECUTE FUNCTION public.m10sys_audit();
"""

# Operator configuration on every host: a critical probe that always fails (nothing listens on
# port 9), so every canary report says "fail"; a rollback command that leaves a line per act.
CANARY_FAILS = """
[[canary.probes]]
name = "system-test-down"
type = "http"
url = "http://127.0.0.1:9/health"
timeout_s = 1
critical = true
"""
ROLLBACK_COMMAND = f'command = ["/bin/sh", "-c", "echo $(hostname) >> {ROLLBACK_LOG}"]'


def configure(host: Host) -> None:
    toml = "/etc/m10jobs/m10jobs.toml"
    host.sh(f"grep -q '^# command = ' {toml}")
    host.sh(f"sed -i 's|^# command = .*|{ROLLBACK_COMMAND}|' {toml}")
    host.sh(f"cat >> {toml} <<'EOF'\n{CANARY_FAILS}EOF")
    steps.short_linger(host)  # the outbox unit's passes end (and restart) every few seconds


def start_all(c: Cluster) -> dict[str, dict[str, dict[str, str]]]:
    """`systemctl start` every service on every host at once; each unit's outcome."""
    units = " ".join(f"{s}.service" for s in SCRIPTS)

    def one(host: Host) -> dict[str, dict[str, str]]:
        host.sh(f"systemctl start {units}", check=False, timeout=280)
        return {
            s: host.show(f"{s}.service", "Result", "ExecMainStatus", "InvocationID")
            for s in SCRIPTS
        }

    with ThreadPoolExecutor(len(c.hosts)) as pool:
        return dict(zip([h.name for h in c.hosts], pool.map(one, c.hosts), strict=True))


def put_fallback(host: Host) -> str:
    """A file the product's own `retry_local_fallback()` keeps, as the service user would."""
    key = f"system-test/{host.name}/report.txt"
    code = (
        "import json, sys; from m10jobs.config import load_config; "
        "from m10jobs.edges.fallback import retry_local_fallback; "
        "p = retry_local_fallback(load_config(), sys.argv[1].encode(), 'report.txt', "
        f"'{steps.ENDPOINT_BUCKET}', sys.argv[2], 'text/plain', 'simulated outage'); "
        "print(json.dumps(str(p)))"
    )
    host.sh(
        "runuser -u m10jobs -- env M10_STATE_DIR=/var/lib/m10jobs "
        f"/opt/m10jobs/bin/python -c \"{code}\" 'content of {host.name}' {key}"
    )
    return key


def daily_while_hourly_held(server: Host, host: Host) -> None:
    hour = (
        "granularity = 'hour' AND period_start = "
        "date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '1 hour'"
    )
    server.psql(
        "CREATE TABLE public.m10sys_hour AS SELECT * FROM aos_cost.snapshot_periods "
        f"WHERE {hour}; DELETE FROM aos_cost.snapshot_periods WHERE {hour}"
    )
    holder = "m10-c:1:system-test-hourly"
    token = server.psql(
        f"SELECT m10_recovery.acquire_lock('aos:cost_snapshot_hourly', '{holder}', 120)"
    )
    assert token, "the hourly lease was not free"
    assert server.psql("SELECT count(*) FROM public.m10sys_hour") == "1"
    unit = "aos-cost-snapshot-daily.service"
    before = host.show(unit, "InvocationID")["InvocationID"]
    host.sh(f"systemctl start --no-block {unit}")
    time.sleep(3)  # the run finds the hour missing and the lease held elsewhere
    # ... then the hourly run "finishes": its hour is back, its lease released.
    server.psql(
        "INSERT INTO aos_cost.snapshot_periods OVERRIDING SYSTEM VALUE "
        "SELECT * FROM public.m10sys_hour"
    )
    server.psql(
        f"SELECT m10_recovery.release_lock('aos:cost_snapshot_hourly', '{holder}', {token})"
    )
    deadline = time.monotonic() + 120
    while True:
        status = host.show(unit, "InvocationID", "ActiveState", "Result", "ExecMainStatus")
        if status["InvocationID"] != before and status["ActiveState"] != "activating":
            break
        assert time.monotonic() < deadline, f"the daily cost run never ended: {status}"
        time.sleep(0.3)
    assert status["Result"] == "success" and status["ExecMainStatus"] in ("0", "75"), (
        status,
        host.out("journalctl -u aos-cost-snapshot-daily -n 8 -o cat --no-pager"),
    )


# systemd's catalog: a unit's run ended, successfully or not (one line per run, also per
# pass of the outbox unit's Restart= chain).
UNIT_SUCCEEDED = "7ad2d189f7e94e70a38c781354912448"
UNIT_FAILED = "d9b373ed55a64feb8242e02dbe79a49c"
HISTORY_LIMIT = 10000


def summaries(text: str) -> list[dict]:
    """The runner's one-line JSON run summaries (stdout) among other lines."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if (
                    isinstance(obj, dict)
                    and {"job", "run_id", "exit_code", "dry_run", "tasks"} <= obj.keys()
                ):
                    found.append(obj)
    return found


def stop_jobs(c: Cluster) -> dict[str, dict[str, dict[str, str]]]:
    """Every timer, then every service, stopped on every host (the outbox's Restart= chain
    ends; a run in progress stops at its next safe point and records itself), the journal
    flushed: from then on the journals and the run history hold the same runs.  Each
    unit's last run as systemd saw it, per host."""
    timers = " ".join(f"{s}.timer" for s in SCRIPTS)
    units = " ".join(f"{s}.service" for s in SCRIPTS)

    def one(host: Host) -> dict[str, dict[str, str]]:
        host.sh(f"systemctl stop {timers}; systemctl stop {units}; journalctl --sync")
        return {
            f"{s}.service": host.show(
                f"{s}.service", "InvocationID", "ExecMainCode", "ExecMainStatus"
            )
            for s in SCRIPTS
        }

    with ThreadPoolExecutor(len(c.hosts)) as pool:
        return dict(zip([h.name for h in c.hosts], pool.map(one, c.hosts), strict=True))


def unit_runs(host: Host, last: dict[str, dict[str, str]]) -> tuple[dict[str, dict], list[str]]:
    """The runs systemd recorded of every job unit on this host: ({run_id: the run's
    summary line, with its unit and invocation}, [what does not add up: a run systemd
    saw end without exactly one summary line of its own]).  `last`: each unit's last run
    (stop_jobs); the one exception allowed: the stop itself killed that run by SIGTERM
    before the runner had taken the signal over (a Restart= pass just starting), so it
    did nothing and printed nothing."""
    units = " ".join(f"-u {s}.service" for s in SCRIPTS)
    fields = "MESSAGE,MESSAGE_ID,SYSLOG_IDENTIFIER,UNIT,INVOCATION_ID,_SYSTEMD_INVOCATION_ID"
    text = host.out(f"journalctl {units} -o json --output-fields={fields} --no-pager")
    runs: dict[str, dict] = {}
    ended: Counter[tuple[str, str]] = Counter()  # (unit, invocation): runs systemd saw end
    printed: Counter[tuple[str, str]] = Counter()  # ... and summary lines their job printed
    for entry in map(json.loads, text.splitlines()):
        message = entry.get("MESSAGE")
        if entry.get("MESSAGE_ID") in (UNIT_SUCCEEDED, UNIT_FAILED):
            ended[entry["UNIT"], entry["INVOCATION_ID"]] += 1
        elif entry.get("SYSLOG_IDENTIFIER") in SCRIPTS and isinstance(message, str):
            for summary in summaries(message):
                unit = f"{summary['job']}.service"
                invocation = entry["_SYSTEMD_INVOCATION_ID"]
                printed[unit, invocation] += 1
                runs[summary["run_id"]] = summary | {"unit": unit, "invocation": invocation}
    killed = {
        (unit, st["InvocationID"])
        for unit, st in last.items()
        if (st["ExecMainCode"], st["ExecMainStatus"]) == ("2", "15")  # CLD_KILLED, SIGTERM
    }
    odd = []
    for unit, inv in sorted(ended.keys() | printed.keys()):
        if ended[unit, inv] == printed[unit, inv]:
            continue
        if (unit, inv) in killed and ended[unit, inv] == printed[unit, inv] + 1:
            print(f"{host.name} {unit}: its last run was killed by the stop as it started")
            continue
        odd.append(
            f"{host.name} {unit} invocation {inv}: ended {ended[unit, inv]} time(s), "
            f"{printed[unit, inv]} summary line(s)"
        )
    return runs, odd


def unrecorded_reason(summary: dict) -> str | None:
    """Why `m10 history` documents this run as not recorded, or None when it must be there:
    a dry run; a run that ended before any task (config, connection, schema gate); a start
    whose every task was skipped (75) by the lease probe before connecting -- which the
    runner asks only when every lease of the job is cluster-wide."""
    tasks = summary["tasks"]
    if summary["dry_run"]:
        return "dry run"
    if not tasks:
        return "ended before any task"
    probed = all(t.scope == "cluster" for t in by_script(summary["job"]).tasks)
    if (
        probed
        and summary["exit_code"] == ExitCode.TEMPFAIL
        and all(t["status"] == "skipped" and t["exit_code"] == ExitCode.TEMPFAIL for t in tasks)
    ):
        return "skipped by the lease probe"
    return None


def history_lists_every_run(c: Cluster, hand_runs: dict[str, list[dict]]) -> None:
    """`m10 history` (JSON and table) on one host lists every run every host's systemd
    recorded (and the operator's hand runs) with its host, job, tasks and exit code; the
    runs it leaves out are exactly the documented ones; it lists nothing else."""
    assert all(len(runs) == 1 for runs in hand_runs.values()), hand_runs
    last = stop_jobs(c)
    expected: dict[str, tuple[str, dict]] = {}  # run_id -> (host, summary)
    odd = []
    for host in c.hosts:
        runs, host_odd = unit_runs(host, last[host.name])
        odd += host_odd
        expected |= {run_id: (host.name, s) for run_id, s in runs.items()}
        expected |= {s["run_id"]: (host.name, s) for s in hand_runs.get(host.name, [])}
    assert not odd, "\n".join(odd)

    reader = c.hosts[1]  # not the database host: the history is cluster-wide
    text = reader.out(f"m10 history --json --limit {HISTORY_LIMIT}")
    rows = [json.loads(line) for line in text.splitlines()]
    assert 0 < len(rows) < HISTORY_LIMIT, len(rows)
    recorded: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        recorded[row["run_id"]].append(row)

    wrong: list[str] = []
    skipped: Counter[str] = Counter()
    for run_id, (name, summary) in expected.items():
        reason = unrecorded_reason(summary)
        found = recorded.get(run_id)
        if found is None:
            if reason is None:
                wrong.append(
                    f"{name} {summary['job']} {run_id} exit {summary['exit_code']}: "
                    f"not in the history ({summary['tasks']})"
                )
            else:
                skipped[reason] += 1
            continue
        got = {
            "host": {r["host"] for r in found},
            "job": {r["job"] for r in found},
            "tasks": sorted((r["task"], r["exit_code"], r["status"]) for r in found),
            "exit_code": combine_exit_codes([r["exit_code"] for r in found]),
        }
        if summary["exit_code"] > 128:  # stopped by a signal: the run ends by it (128 + N)
            got["exit_code"] = summary["exit_code"]  # whatever its tasks' own codes
        want = {
            "host": {name},
            "job": {summary["job"]},
            "tasks": sorted((t["task"], t["exit_code"], t["status"]) for t in summary["tasks"]),
            "exit_code": summary["exit_code"],
        }
        if got != want:
            wrong.append(f"{run_id}: the history says {got}, the run said {want}")
    unknown = sorted(recorded.keys() - expected.keys())
    assert not wrong and not unknown, "\n".join(
        wrong + [f"recorded but never run: {recorded[r]}" for r in unknown]
    )
    # every host's runs, and every job's, are there (whichever host won which lease)
    assert {r["host"] for r in rows} == set(NAMES), {r["host"] for r in rows}
    assert {r["job"] for r in rows} == set(SCRIPTS), {r["job"] for r in rows}
    # not recorded, as documented: starts the lease probe skipped (no run failed early here)
    assert set(skipped) <= {"skipped by the lease probe"}, skipped
    print(
        f"history: {len(recorded)} runs ({len(rows)} task rows) of {len(expected)} "
        f"recorded; not recorded: {dict(skipped)}",
        flush=True,
    )

    # The table an operator reads lists the same runs, with their exit codes.
    table = reader.out(f"m10 history --limit {HISTORY_LIMIT}").splitlines()
    assert table[0].split()[:8] == [
        "STARTED",
        "HOST",
        "JOB",
        "TASK",
        "RUN",
        "SECONDS",
        "EXIT",
        "ERROR",
    ]
    listed = {(cols[4], cols[3], int(cols[6])) for cols in map(str.split, table[1:])}
    assert listed == {(r["run_id"], r["task"], r["exit_code"]) for r in rows}


def lease_overlaps(rows: list[dict[str, str]]) -> list[str]:
    """Each (lock, token) holds from the moment its row was written until the row is deleted
    (released, reclaimed) or its last expiry, whichever is first.  (Not from `acquired_at`:
    before migration 080 that was the clock when acquire_lock began, before it may have
    waited for the previous holder's release to commit.)  A takeover is legitimate only once
    the previous lease has expired, so it does not end the previous span.  Per lock, spans
    must not overlap."""
    spans: dict[tuple[str, int], list[datetime]] = {}
    for r in rows:
        lock, token = r["lock_name"], int(r["fencing_token"])
        at, expiry = datetime.fromisoformat(r["at"]), datetime.fromisoformat(r["expires_at"])
        span = spans.setdefault((lock, token), [at, expiry])
        span[1] = min(at, expiry) if r["op"] == "delete" else max(span[1], expiry)
    by_lock: dict[str, list[tuple[datetime, datetime, int]]] = defaultdict(list)
    for (lock, token), (start, end) in spans.items():
        by_lock[lock].append((start, end, token))
    found = []
    for lock, items in by_lock.items():
        items.sort()
        for (_s1, e1, t1), (s2, _e2, t2) in pairwise(items):
            if s2 < e1:
                found.append(f"{lock}: token {t1} held until {e1}, token {t2} from {s2}")
    return found


def test_three_hosts_one_database(wheelhouse: Path, tmp_path: Path) -> None:
    with cluster(NAMES, tmp_path) as c:
        print("boot: " + ", ".join(f"{h.name} {h.boot_seconds:.1f}s" for h in c.hosts))
        s3 = c.start_s3()
        server = c.server
        readme = steps.Install.from_readme()
        steps.serve_database(server)
        with phase("README: install, on every host"), ThreadPoolExecutor(len(c.hosts)) as pool:
            list(pool.map(lambda h: steps.run_lines(h, readme.install, wheelhouse), c.hosts))
        steps.run_lines(server, readme.database, wheelhouse)
        server.psql(AUDIT_SQL)
        for host in c.hosts:
            configure(host)
            steps.add_environment(host, steps.environment(s3))
            steps.run_lines(host, readme.configure, wheelhouse)
        steps.create_bucket(server)
        for host in c.hosts:  # every timer scheduled on every host
            timers = host.out("systemctl list-timers --all --no-legend --plain")
            assert all(f"{s}.timer" in timers for s in SCRIPTS), (host.name, timers)

        # Stats: two hosts compute different halves of a window ending yesterday by hand
        # (the runbook's backfill); whoever exports afterwards must still write every day.
        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        first = yesterday - timedelta(days=9)
        middle = first + timedelta(days=4)
        stats = "m10 run m10-daily-stats --start-date {} --until {}"
        hand_runs = {
            c.hosts[0].name: summaries(c.hosts[0].out(stats.format(first, middle))),
            c.hosts[1].name: summaries(
                c.hosts[1].out(stats.format(middle + timedelta(days=1), yesterday))
            ),
        }

        keys = {}
        events = []
        outcomes = []
        for rnd in range(ROUNDS):
            batch = [f"system-test-{rnd}-{i}" for i in range(EVENTS_PER_ROUND)]
            server.psql(
                "SELECT count(m10_recovery.enqueue_outbox('system.test', "
                "jsonb_build_object('n', k), NULL, NULL, k)) FROM unnest(ARRAY["
                + ",".join(f"'{k}'" for k in batch)
                + "]) AS k"
            )
            events += batch
            with phase(f"round {rnd + 1}: every service on every host"):
                outcomes.append(start_all(c))
            if rnd == 0:  # the state directory exists now (StateDirectory=)
                keys = {h.name: put_fallback(h) for h in c.hosts}

        # Every unit on every host succeeded in every round (75 = skipped is success).
        bad = [
            (i, host, script, st)
            for i, rnd in enumerate(outcomes)
            for host, units in rnd.items()
            for script, st in units.items()
            if st["Result"] != "success" or st["ExecMainStatus"] not in ("0", "75")
        ]
        assert not bad, (
            "\n".join(map(str, bad))
            + "\n"
            + "\n".join(
                h.out(
                    f"journalctl _SYSTEMD_INVOCATION_ID={st['InvocationID']} + "
                    f"INVOCATION_ID={st['InvocationID']} -o cat --no-pager"
                )
                for _, name, _, st in bad[:3]
                for h in c.hosts
                if h.name == name
            )
        )

        # A daily cost run while another host's hourly run holds its lease, an hour of the
        # day it rebuilds still missing: it waits for that run (or skips, 75), never fails.
        with phase("daily cost while another host's hourly run holds the lease"):
            daily_while_hourly_held(server, c.hosts[1])

        # Leases never overlapped; cluster-wide ones were won by more than one host, and a
        # host-local lease (<lock>@<host>) only ever by its own host.
        rows = json.loads(
            server.psql(
                "SELECT coalesce(json_agg(a ORDER BY id), '[]') FROM public.m10sys_lease_audit a"
            )
        )
        assert rows, "no lease was ever taken"
        assert not lease_overlaps(rows), lease_overlaps(rows)
        winners = {r["holder_id"].split(":")[0] for r in rows if "@" not in r["lock_name"]}
        assert len(winners) >= 2, f"only {winners} ever won a cluster-wide lease"
        wrong = {
            (r["lock_name"], r["holder_id"])
            for r in rows
            if "@" in r["lock_name"]
            and r["lock_name"].rsplit("@", 1)[1] != r["holder_id"].split(":")[0]
        }
        assert not wrong, wrong

        # The outbox: every event published, each exactly once in the stream.
        pending = server.psql(
            "SELECT count(*) FROM m10_recovery.outbox o WHERE "
            "o.idempotency_key LIKE 'system-test-%' AND status <> 'published'"
        )
        assert pending == "0", f"{pending} events not published"
        stream = server.python(
            "import json, os, redis; r = redis.Redis.from_url(os.environ['M10_REDIS_URL']); "
            "print(json.dumps([[f[b'event_id'].decode(), f[b'idempotency_key'].decode()] "
            "for _, f in r.xrange('m10:outbox')]))"
        )
        assert isinstance(stream, list)
        ids = [event_id for event_id, _ in stream]
        assert len(ids) == len(set(ids)), "an event_id was published twice"
        published = sorted(k for _, k in stream if k.startswith("system-test-"))
        assert published == sorted(events)

        # One failing verdict (every canary report failed) -> one rollback cluster-wide.
        acts = [
            line
            for h in c.hosts
            for line in h.out(f"cat {ROLLBACK_LOG} 2>/dev/null || true").splitlines()
        ]
        assert len(acts) == 1, f"rollbacks acted: {acts}"

        # Every host's fallback file reached the object store.
        for host in c.hosts:
            marks = host.out(
                "ls /var/lib/m10jobs/fallback-uploads/ | grep -c '\\.uploaded$' || true"
            )
            assert int(marks or 0) >= 1, f"{host.name}: no .uploaded marker"
        stored = server.python(
            "import json, os, sys, boto3; s3 = boto3.client('s3', endpoint_url=os.environ["
            "'M10_R2_ENDPOINT_URL']); print(json.dumps({k: s3.get_object(Bucket=os.environ["
            "'M10_R2_BUCKET'], Key=k)['Body'].read().decode() for k in sys.argv[1:]}))",
            *keys.values(),
        )
        assert stored == {k: f"content of {n}" for n, k in keys.items()}

        # Stats: every host's CSV for each month of the window has every day, the same rows.
        wanted = [first + timedelta(days=i) for i in range((yesterday - first).days + 1)]
        contents = {}
        for host in c.hosts:
            rows_by_day: dict[date, str] = {}
            for month in sorted({(d.year, d.month) for d in wanted}):
                path = f"/var/log/m10/m10_stats_{month[0]:04d}-{month[1]:02d}.csv"
                for line in host.out(f"cat {path}").splitlines()[1:]:
                    rows_by_day[date.fromisoformat(line.split(",", 1)[0])] = line
            missing = [d for d in wanted if d not in rows_by_day]
            assert not missing, f"{host.name}: stats CSV lacks {missing}"
            contents[host.name] = [rows_by_day[d] for d in wanted]
        assert len({tuple(v) for v in contents.values()}) == 1, contents

        with phase("m10 history lists every run of every host"):
            history_lists_every_run(c, hand_runs)
