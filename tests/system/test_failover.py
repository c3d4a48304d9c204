"""The engines fail over under booted hosts: PostgreSQL primary on m10-a with a streaming
standby on m10-b (pg_basebackup -R), Redis primary on m10-a, replicas on m10-b and m10-c, three
Sentinels (one per host); the outbox processor's and maintenance's timers on all three hosts,
configured with a two-host DSN (target_session_attrs=read-write) and a redis+sentinel:// URL,
events enqueued all along.  Mid-run the PostgreSQL primary is SIGKILLed and the standby
promoted; later the Redis primary is SIGKILLed and Sentinel promotes the replica.

What must hold: every event the final primary has reaches the stream exactly once (every row
replay_log calls published is in it, no event_id twice); leases never overlap except where the
server changed under them (an orphaned lease: its holder's session provably ended); fencing
tokens never go backwards; every unit is back to exit 0/75 within two ticks.  The recovery
times (kill -> the first event enqueued after it seen in the stream) are printed."""

from __future__ import annotations

import json
import shlex
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest

from tests.system import steps
from tests.system.harness import Cluster, Host, cluster, phase
from tests.system.test_three_hosts import AUDIT_SQL

pytestmark = pytest.mark.timeout(300)

NAMES = ["m10-a", "m10-b", "m10-c"]
KEPT = ("m10-outbox-processor", "m10-maintenance")
PG_PRIMARY, PG_STANDBY = 5432, 5433
REDIS_PRIMARY, REDIS_REPLICAS = 6390, (6391, 6392)
SENTINELS = (26390, 26391, 26392)
STANDBY_DIR = "/var/lib/postgresql/m10sys-standby"
REDIS_DIR = "/var/lib/redis/m10sys"
DSN = (
    f"postgresql://m10_ops_login:change-me@127.0.0.1:{PG_PRIMARY},127.0.0.1:{PG_STANDBY}"
    "/platform?target_session_attrs=read-write&connect_timeout=2"
)
ENQ_DSN = DSN.replace("m10_ops_login:change-me", "m10sys_enq:enq")
REDIS_URL = "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in SENTINELS) + "/mymaster/0"
RECOVERY_BOUND_S = 30.0
"""Generous: the figures printed are the point; this only catches "never came back"."""

# Runs inside m10-c with the installed venv: enqueues an event every 0.2 s through the
# two-host DSN (each attempt's outcome logged: committed, or failed/uncertain), and watches
# the stream through the Sentinels, logging when each event was first seen.
DRIVER = r"""
import json, os, sys, threading, time
import psycopg, redis.sentinel
dsn, out = sys.argv[1], sys.argv[2]
stop = lambda: os.path.exists(out + "/stop")

def enqueue():
    n, conn, log = 0, None, open(out + "/enqueued", "a", buffering=1)
    while not stop():
        key = f"fo-{n}"
        t0 = time.time()
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(dsn, autocommit=True, connect_timeout=2)
            conn.execute(
                "SELECT m10_recovery.enqueue_outbox('system.failover', "
                "jsonb_build_object('n', %s::int), NULL, NULL, %s)", (n, key))
            log.write(json.dumps({"key": key, "t": t0, "ok": True}) + "\n")
            n += 1
        except Exception as exc:
            log.write(json.dumps({"key": key, "t": t0, "ok": False, "e": str(exc)[:80]}) + "\n")
            n += 1  # the key may have committed (a cut commit): never reused
            if conn is not None:
                try: conn.close()
                except Exception: pass
            conn = None
        time.sleep(0.2)

def watch():
    sentinel = redis.sentinel.Sentinel(
        [("127.0.0.1", p) for p in (26390, 26391, 26392)], socket_timeout=1)
    last, log = "-", open(out + "/seen", "a", buffering=1)
    while not stop():
        try:
            r = sentinel.master_for("mymaster", socket_timeout=1)
            for sid, f in r.xrange("m10:outbox", min=last, count=1000):
                sid = sid.decode()
                if sid == last:
                    continue
                last = sid
                log.write(json.dumps({"key": f[b"idempotency_key"].decode(),
                                      "t": time.time()}) + "\n")
        except Exception:
            pass
        time.sleep(0.1)

ts = [threading.Thread(target=f) for f in (enqueue, watch)]
for t in ts: t.start()
for t in ts: t.join()
"""


def audit_sql() -> str:
    """test_three_hosts' lease audit, plus the server stamp each row was written under."""
    sql = AUDIT_SQL
    for old, new in (
        (
            "expires_at timestamptz NOT NULL, at",
            "expires_at timestamptz NOT NULL, server_started_at timestamptz, timeline int, at",
        ),
        ("acquired_at, expires_at)", "acquired_at, expires_at, server_started_at, timeline)"),
        ("r.expires_at);", "r.expires_at, r.server_started_at, r.timeline);"),
    ):
        assert old in sql, f"AUDIT_SQL changed: {old!r}"
        sql = sql.replace(old, new)
    return sql


def jsonl(host: Host, path: str) -> list[dict]:
    return [
        json.loads(line)
        for line in host.out(f"cat {path} 2>/dev/null || true").splitlines()
        if line.strip()
    ]


def pg_standby(primary: Host, standby: Host) -> None:
    """A streaming standby of primary's cluster on standby:5433 (a transient unit)."""
    bindir = "/usr/lib/postgresql/$(ls /usr/lib/postgresql | sort -n | tail -1)/bin"
    hba = primary.out("cat $(runuser -u postgres -- psql -qAt -c 'SHOW hba_file')")
    standby.sh(
        f"install -d -o postgres -g postgres -m 700 {STANDBY_DIR} && "
        "install -d -o postgres -g postgres /var/run/postgresql && "
        f"runuser -u postgres -- env PGPASSWORD=repl {bindir}/pg_basebackup -h 127.0.0.1 "
        f"-p {PG_PRIMARY} -U m10sys_repl -D {STANDBY_DIR} -R -X stream -c fast"
    )
    conf = (
        f"port = {PG_STANDBY}\nlisten_addresses = 'localhost'\n"
        "unix_socket_directories = '/var/run/postgresql'\n"
        f"hba_file = '{STANDBY_DIR}/pg_hba.conf'\nhot_standby = on\n"
    )
    standby.sh(
        f"cat > {STANDBY_DIR}/pg_hba.conf <<'EOF'\n{hba}\nEOF\n"
        f"cat > {STANDBY_DIR}/postgresql.conf <<'EOF'\n{conf}EOF\n"
        f"touch {STANDBY_DIR}/pg_ident.conf; chown postgres: {STANDBY_DIR}/*.conf\n"
        "systemd-run -q --unit=m10sys-pg-standby -p User=postgres -p Group=postgres "
        f"-p KillMode=mixed {bindir}/postgres -D {STANDBY_DIR}\n"
        f"for i in $(seq 150); do pg_isready -q -h /var/run/postgresql -p {PG_STANDBY} "
        "&& exit 0; sleep 0.2; done; exit 1"
    )
    for _ in range(100):
        if primary.psql("SELECT count(*) FROM pg_stat_replication") == "1":
            return
        time.sleep(0.2)
    raise AssertionError("the standby never streamed")


def redis_node(host: Host, unit: str, *args: str) -> None:
    host.sh(
        f"install -d -o redis -g redis {REDIS_DIR}/{unit} && "
        f"systemd-run -q --unit={unit} -p User=redis -p Group=redis "
        f"-p WorkingDirectory={REDIS_DIR}/{unit} /usr/bin/redis-server "
        + " ".join(shlex.quote(a) for a in args)
    )


def redis_ha(c: Cluster) -> None:
    """Primary on m10-a, replicas on m10-b and m10-c (AOF everysec on all), a Sentinel on each
    host.  Two replicas: with min_replicas = 1, the one left after a failover keeps WAIT
    satisfied."""
    common = ["--bind", "127.0.0.1", "--appendonly", "yes", "--appendfsync", "everysec"]
    common += ["--save", ""]
    ports = (REDIS_PRIMARY, *REDIS_REPLICAS)
    for host, port in zip(c.hosts, ports, strict=True):
        redis_node(host, "m10sys-redis", "--port", str(port), *common)
        host.sh(f"for i in $(seq 100); do redis-cli -p {port} ping && break; sleep 0.2; done")
    for host, port in zip(c.hosts[1:], REDIS_REPLICAS, strict=True):
        host.sh(f"redis-cli -p {port} replicaof 127.0.0.1 {REDIS_PRIMARY}")
    for host, port in zip(c.hosts, SENTINELS, strict=True):
        conf = (
            f"port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 "
            f"{REDIS_PRIMARY} 2\nsentinel down-after-milliseconds mymaster 2000\n"
            "sentinel failover-timeout mymaster 10000\n"
        )
        host.sh(
            f"install -d -o redis -g redis {REDIS_DIR}/sentinel && "
            f"cat > {REDIS_DIR}/sentinel/sentinel.conf <<'EOF'\n{conf}EOF\n"
            f"chown redis: {REDIS_DIR}/sentinel/sentinel.conf"
        )
        redis_node(host, "m10sys-sentinel", f"{REDIS_DIR}/sentinel/sentinel.conf", "--sentinel")
    for _ in range(150):  # the replicas synced, every Sentinel knows the others
        links = [
            h.out(f"redis-cli -p {p} info replication", check=False)
            for h, p in zip(c.hosts[1:], REDIS_REPLICAS, strict=True)
        ]
        seen = [
            h.out(f"redis-cli -p {p} sentinel master mymaster", check=False)
            for h, p in zip(c.hosts, SENTINELS, strict=True)
        ]
        if all("master_link_status:up" in link for link in links) and all(
            "num-other-sentinels\n2" in s for s in seen
        ):
            return
        time.sleep(0.3)
    raise AssertionError(f"Redis HA never settled: {links}\n{seen}")


def configure(host: Host, readme: steps.Install, wheelhouse: Path) -> None:
    """The README's configure lines with the two-host DSN; only the outbox's and
    maintenance's timers left running (the rest would only load the machine)."""
    steps.add_environment(host, {"M10_REDIS_URL": REDIS_URL})
    steps.short_linger(host)
    toml = "/etc/m10jobs/m10jobs.toml"
    host.sh(
        f"sed -i -e 's|^require_aof = .*|require_aof = true|' "
        f"-e 's|^min_replicas = .*|min_replicas = 1|' {toml}"
    )
    lines = [
        ln.replace("@localhost/platform", "@" + DSN.split("@", 1)[1]) for ln in readme.configure
    ]
    assert lines != readme.configure, "README's DSN line changed: bring the test in line"
    steps.run_lines(host, lines, wheelhouse)
    others = [
        t
        for t in host.out(
            "systemctl list-units --all --plain --no-legend 'm10-*.timer' 'aos-*.timer'"
        ).split()
        if t.endswith(".timer")
    ]
    host.sh("systemctl stop " + " ".join(t for t in others if t.removesuffix(".timer") not in KEPT))


def first_seen_after(enqueued: list[dict], seen: dict[str, float], t: float) -> float | None:
    """When the first event enqueued (committed) after t was first seen in the stream."""
    later = [seen[e["key"]] for e in enqueued if e["ok"] and e["t"] > t and e["key"] in seen]
    return min(later) if later else None


def wait_recovered(c: Cluster, t_kill: float, what: str) -> float:
    host = c.hosts[2]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen = {s["key"]: s["t"] for s in jsonl(host, "/run/m10sys/seen")}
        got = first_seen_after(jsonl(host, "/run/m10sys/enqueued"), seen, t_kill)
        if got is not None:
            return got - t_kill
        time.sleep(1)
    raise AssertionError(f"no event enqueued after the {what} kill reached the stream in 60 s")


def units_back(c: Cluster) -> dict[str, list[str]]:
    """Every kept unit on every host ends a run with 0/75, at its own
    tick or at one started by hand (a second tick if the first was not clean)."""
    bad: dict[str, list[str]] = {}

    def one(host: Host) -> None:
        for unit in (f"{s}.service" for s in KEPT):
            for _tick in range(2):
                if host.show(unit, "ActiveState")["ActiveState"] != "active":
                    host.sh(f"systemctl start {unit}", check=False, timeout=120)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    st = host.show(
                        unit,
                        "ActiveState",
                        "Result",
                        "ExecMainStatus",
                        "NRestarts",
                        "ExecMainExitTimestampMonotonic",
                    )
                    if st["ActiveState"] not in ("activating", "deactivating") and (
                        st["ActiveState"] == "active"
                        or st["ExecMainStatus"] in ("0", "75")
                        or st["Result"] != "success"
                    ):
                        break
                    time.sleep(0.5)
                if st["Result"] == "success" and (
                    st["ActiveState"] == "active" or st["ExecMainStatus"] in ("0", "75")
                ):
                    break
            else:
                bad.setdefault(host.name, []).append(f"{unit}: {st}")

    with ThreadPoolExecutor(len(c.hosts)) as pool:
        list(pool.map(one, c.hosts))
    return bad


def lease_violations(rows: list[dict]) -> list[str]:
    """Per lock: fencing tokens never go backwards (in the order the rows were written), and
    spans (row written -> deleted or last expiry) do not overlap, except that a lease taken
    over from a holder on another server instance (restarted or promoted since: the previous
    holder's session provably ended) ends the previous span there."""
    found = []
    by_lock: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_lock[r["lock_name"]].append(r)
    for lock, items in by_lock.items():
        items.sort(key=lambda r: (datetime.fromisoformat(r["at"]), r["id"]))
        tokens = [int(r["fencing_token"]) for r in items]
        for t1, t2 in pairwise(tokens):
            if t2 < t1:
                found.append(f"{lock}: token {t2} after {t1}")
        spans: dict[int, list] = {}
        for r in items:
            tok = int(r["fencing_token"])
            at, exp = datetime.fromisoformat(r["at"]), datetime.fromisoformat(r["expires_at"])
            stamp = (r["server_started_at"], r["timeline"])
            if tok not in spans:
                for prev in spans.values():  # taken over from another server instance
                    if prev[2] != stamp and prev[1] > at:
                        prev[1] = at
                spans[tok] = [at, exp, stamp]
            span = spans[tok]
            span[1] = min(at, exp) if r["op"] == "delete" else max(span[1], exp)
            span[2] = stamp
        ordered = sorted((s[0], s[1], t) for t, s in spans.items())
        for (_s1, e1, t1), (s2, _e2, t2) in pairwise(ordered):
            if s2 < e1:
                found.append(f"{lock}: token {t1} held until {e1}, token {t2} from {s2}")
    return found


def failovers(c: Cluster) -> tuple[float, float, float]:
    """Kill the PostgreSQL primary and promote the standby, then kill the Redis primary; the
    recovery times (and how long after the kill the promotion came)."""
    a, b, _ = c.hosts
    # -- PostgreSQL: SIGKILL the primary's every process, promote the standby 1 s later
    t_pg = time.time()
    a.sh("systemctl kill -s KILL 'postgresql@*'")  # no Restart= in Debian's unit
    time.sleep(1)
    b.sh(f"runuser -u postgres -- psql -p {PG_STANDBY} -qAt -c 'SELECT pg_promote()'")
    promoted = time.time() - t_pg
    pg_recovery = wait_recovered(c, t_pg, "PostgreSQL")
    time.sleep(6)

    # -- Redis: SIGKILL the primary; the Sentinels promote the replica
    t_redis = time.time()
    a.sh("systemctl kill -s KILL m10sys-redis.service")
    redis_recovery = wait_recovered(c, t_redis, "Redis")
    time.sleep(6)
    return pg_recovery, promoted, redis_recovery


def diagnose(c: Cluster) -> None:
    """What the hosts say, for a failure's report."""
    drv = c.hosts[2]
    print(
        drv.out(
            "tail -n 5 /run/m10sys/enqueued; wc -l /run/m10sys/seen; "
            "tail -n 2 /run/m10sys/seen; journalctl -u m10sys-driver -n 10 -o cat",
            check=False,
        )
    )
    for host in c.hosts:
        print(f"--- {host.name}")
        print(
            host.out(
                "systemctl list-units --all --plain --no-legend 'm10*'; journalctl "
                "-u m10-outbox-processor -n 25 -o cat --no-pager",
                check=False,
            )
        )


def test_failover_pg_then_redis(wheelhouse: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    with cluster(NAMES, tmp_path) as c:
        a, b, drv = c.hosts
        print("boot: " + ", ".join(f"{h.name} {h.boot_seconds:.1f}s" for h in c.hosts))
        readme = steps.Install.from_readme()
        steps.serve_database(a)
        a.sh("systemctl stop redis-server")  # the HA pair below replaces it
        with phase("README: install, on every host"), ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda h: steps.run_lines(h, readme.install, wheelhouse), c.hosts))
        steps.run_lines(a, readme.database, wheelhouse)
        a.psql(audit_sql())
        a.psql(
            "CREATE ROLE m10sys_repl REPLICATION LOGIN PASSWORD 'repl'; "
            "CREATE ROLE m10sys_enq SUPERUSER LOGIN PASSWORD 'enq'"
        )
        with phase("PostgreSQL standby on m10-b, Redis primary + 2 replicas + 3 Sentinels"):
            pg_standby(a, b)
            redis_ha(c)
        with phase("configure, timers on every host"):
            for host in c.hosts:
                configure(host, readme, wheelhouse)
        drv.sh(
            "mkdir -p /run/m10sys && cat > /run/m10sys/driver.py <<'EOF'\n"
            f"{DRIVER}\nEOF\n"
            "systemd-run -q --unit=m10sys-driver /opt/m10jobs/bin/python "
            f"/run/m10sys/driver.py {shlex.quote(ENQ_DSN)} /run/m10sys"
        )
        for host in c.hosts:  # the chain starts now, not at the next minute's tick
            host.sh("systemctl start --no-block m10-outbox-processor.service")
        try:
            wait_recovered(c, 0.0, "first")  # events flowing through a running chain
            time.sleep(4)
            measured = failovers(c)
        except BaseException:
            diagnose(c)
            raise
        pg_recovery, promoted, redis_recovery = measured
        drv.sh("touch /run/m10sys/stop")

        drv.sh(
            "for i in $(seq 100); do systemctl -q is-active m10sys-driver || exit 0; "
            "sleep 0.2; done; exit 1"
        )

        with phase("every unit back to 0/75"):
            bad = units_back(c)
        print(
            f"PostgreSQL: primary SIGKILLed, standby promoted {promoted:.1f} s later; "
            f"first event enqueued after the kill in the stream {pg_recovery:.1f} s after it"
        )
        print(
            f"Redis: primary SIGKILLed, Sentinel failover; first event enqueued after the "
            f"kill in the stream {redis_recovery:.1f} s after it"
        )
        assert not bad, bad

        # -- exactly once, from the final primaries
        def bpsql(sql: str) -> str:
            return b.out(
                f"runuser -u postgres -- psql -p {PG_STANDBY} -d platform -qAt -c "
                + shlex.quote(sql)
            )

        for _ in range(60):  # the chain drains what was enqueued last
            if (
                bpsql(
                    "SELECT count(*) FROM m10_recovery.outbox WHERE idempotency_key "
                    "LIKE 'fo-%' AND status <> 'published'"
                )
                == "0"
            ):
                break
            time.sleep(1)
        stored = json.loads(
            bpsql(
                "SELECT json_build_object('outbox', (SELECT coalesce(json_agg(json_build_object("
                "'k', idempotency_key, 's', status)), '[]') FROM m10_recovery.outbox "
                "WHERE idempotency_key LIKE 'fo-%'), 'audit', (SELECT coalesce(json_agg(a "
                "ORDER BY id), '[]') FROM public.m10sys_lease_audit a))"
            )
        )
        master = b.out(f"redis-cli -p {SENTINELS[1]} sentinel get-master-addr-by-name mymaster")
        port = int(master.split()[1])
        assert port in REDIS_REPLICAS, f"Sentinel did not promote a replica: {master}"
        stream = b.python(
            f"import json, redis; r = redis.Redis(port={port}); "
            "print(json.dumps([[f[b'event_id'].decode(), f[b'idempotency_key'].decode()] "
            "for _, f in r.xrange('m10:outbox')]))"
        )
        assert isinstance(stream, list)
        ids = [e for e, _ in stream]
        assert len(ids) == len(set(ids)), "an event_id is in the stream twice"
        in_stream = [k for _, k in stream if k.startswith("fo-")]
        assert len(in_stream) == len(set(in_stream)), "an event was published twice"
        rows = {r["k"]: r["s"] for r in stored["outbox"]}
        assert all(s == "published" for s in rows.values()), "events left unpublished"
        lost = sorted(set(rows) - set(in_stream))
        assert not lost, f"published per the database, not in the stream: {lost[:10]}"
        enq = jsonl(drv, "/run/m10sys/enqueued")
        acked = {e["key"] for e in enq if e["ok"]}
        wal_lost = sorted(acked - set(rows))
        print(
            f"events: {len(acked)} committed, {len(rows)} on the promoted primary, "
            f"{len(set(in_stream))} in the stream; {len(wal_lost)} committed on the old "
            f"primary but not replicated before its kill (asynchronous standby)"
        )
        assert len(acked) >= 50, f"too few events flowed: {len(acked)}"
        assert not lease_violations(stored["audit"]), lease_violations(stored["audit"])
        assert len({r["timeline"] for r in stored["audit"]}) >= 2, "no lease on the new timeline"
        assert pg_recovery <= RECOVERY_BOUND_S and redis_recovery <= RECOVERY_BOUND_S
    print(f"test_failover: {time.monotonic() - started:.0f} s")
