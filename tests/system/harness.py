"""Throwaway systemd hosts for the system tier: real systemd 252 as PID 1 of fresh namespaces.

Each host is `tests/system/boot-host.sh` run by `unshare --pid --fork --mount --uts --ipc`:
an overlay of the machine's root (upper layer on a tmpfs, so the machine is never written),
fresh /tmp and /run, its own cgroup subtree in every hierarchy, its own host name.  All hosts
of a cluster share one private network namespace (loopback only): the server host runs
Debian's `postgresql` and `redis-server` as units on its 127.0.0.1, the others reach them
there and boot with those units masked.  Nothing listens on the machine's own ports, so
concurrent runs of the tier cannot collide, and PyPI is replaced by a wheelhouse built once
per session.  SIGKILL to a host's PID 1 ends the host; `Cluster` does that even on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
BOOT_SCRIPT = Path(__file__).resolve().with_name("boot-host.sh")
SYSTEMD = Path("/lib/systemd/systemd")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# An operator's root shell on Debian: no pyenv shims, no /root/.local.
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SERVER_UNITS = (
    "postgresql.service",
    "postgresql@.service",
    "redis-server.service",
    "redis.service",
    "prometheus-node-exporter.service",  # one :9100 per network namespace
)
APT_PACKAGES = {
    "postgresql": "/usr/lib/postgresql",
    "redis-server": "/usr/bin/redis-server",
    "systemd": str(SYSTEMD),
    "python3-venv": "/usr/lib/python3/dist-packages/pip",
    "make": "/usr/bin/make",
    "iproute2": "/usr/sbin/ip",
    "git": "/usr/bin/git",
    # node_exporter as Debian ships it (user prometheus, textfile directory
    # /var/lib/prometheus/node-exporter, enabled at boot): where `make install` writes metrics
    "prometheus-node-exporter": "/usr/bin/prometheus-node-exporter",
}
BOOT_TIMEOUT = 120.0
RECORDS = Path("/run/m10sys-clusters")
"""On the machine: one JSON record per live cluster (owner pid, cgroups, netns), so a run
killed before its teardown (SIGKILL, power cut of the CI job) is reaped by the next one."""
UPPER = "/run/m10sys/upper"
"""Inside a host: its overlay's upper layer (what it wrote), read-only."""


class HostError(AssertionError):
    """A command inside a host failed; carries its output for the test report."""


def unavailable() -> str | None:
    """Why this machine cannot boot a host (printed as the skip reason), or None.

    Only a missing capability skips: not root, or unshare/pivot_root refused (an
    unprivileged container).  Missing packages are installed instead (`install_packages`)."""
    if os.geteuid() != 0:
        return "system tier needs root (unshare --mount/--pid, pivot_root): run as root"
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return "system tier needs util-linux unshare and nsenter"
    probe = tempfile.mkdtemp(prefix="m10sys-probe-")
    script = (
        'set -e; mount --make-rprivate /; mount -t tmpfs probe "$1"; '
        'mkdir "$1/old"; cd "$1"; pivot_root . old'
    )
    try:
        done = subprocess.run(
            [
                "unshare",
                "--pid",
                "--fork",
                "--mount",
                "--uts",
                "--ipc",
                "sh",
                "-c",
                script,
                "probe",
                probe,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        os.rmdir(probe)
    if done.returncode != 0:
        return (
            "system tier cannot boot systemd here: unshare/pivot_root refused "
            f"({done.stderr.strip() or done.returncode})"
        )
    return None


def install_packages() -> None:
    """The Debian packages the hosts run (CI starts from a machine with none of them
    running, maybe not installed): apt, as root.  A package's postinst cannot start a
    service here (no systemd PID 1), so the machine itself runs none of them."""
    missing = [pkg for pkg, path in APT_PACKAGES.items() if not Path(path).exists()]
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=300"]
    subprocess.run(["apt-get", *lock, "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def build_wheelhouse(directory: Path) -> Path:
    """Every wheel `make install` needs (the package's dependencies and its build backend),
    so `pip install .` inside an offline host resolves from files only.  Built on the
    machine (which may reach PyPI), once per session.  It lives under /var/tmp: the hosts'
    overlay shows the machine's root, but their /tmp is a fresh tmpfs.  Resolved by the
    system Python `make install` will use (markers such as python_full_version differ)."""
    python = shutil.which("python3", path=HOST_PATH) or "/usr/bin/python3"
    pip = [python, "-m", "pip", "-q", "--disable-pip-version-check"]
    for argv in (
        [*pip, "wheel", "--wheel-dir", str(directory), str(CHECKOUT)],
        [*pip, "download", "--dest", str(directory), "hatchling", "wheel"],
    ):
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise HostError(f"building the wheelhouse failed: {argv}\n{done.stderr[-3000:]}")
    for own in directory.glob("m10jobs-*.whl"):
        own.unlink()  # `make install` builds the checkout itself
    return directory


@dataclass
class Network:
    """A private network namespace shared by a cluster's hosts (loopback only)."""

    name: str = field(default_factory=lambda: "m10sys-" + secrets.token_hex(4))

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def create(self) -> None:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(
            ["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"], check=True
        )

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], check=False, stderr=subprocess.DEVNULL)

    def popen(self, argv: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["nsenter", f"--net={self.path}", *argv], **kw)  # type: ignore[call-overload]


@dataclass
class Host:
    """One booted systemd host; `pid` is its PID 1 as the machine sees it."""

    name: str
    tag: str
    base: Path
    log: Path
    launcher: subprocess.Popen[bytes] | None = None
    pid: int = 0
    boot_seconds: float = 0.0

    @property
    def cgroup(self) -> str:
        return f"{self.tag}-{self.name}"

    # -- driving it ------------------------------------------------------------------------
    def sh(
        self,
        script: str,
        *,
        check: bool = True,
        timeout: float = 180,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a bash script inside the host as root, in a clean login-like environment."""
        base_env = {
            "PATH": HOST_PATH,
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0",
        }
        argv = [
            "nsenter",
            "-t",
            str(self.pid),
            "-a",
            "--",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in {**base_env, **(env or {})}.items()),
            "bash",
            "-c",
            script,
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise HostError(
                f"[{self.name}] exit {done.returncode}: {script}\n"
                f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n"
                f"{done.stderr[-4000:]}"
            )
        return done

    def out(self, script: str, **kw: object) -> str:
        return self.sh(script, **kw).stdout.strip()  # type: ignore[arg-type]

    def show(self, unit: str, *props: str) -> dict[str, str]:
        text = self.out(f"systemctl show {shlex.quote(unit)} " + " ".join(f"-p {p}" for p in props))
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def psql(self, sql: str, db: str = "platform") -> str:
        """A query as the database superuser (peer auth as `postgres`), unaligned."""
        return self.out(
            f"runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qAt -d {db} -c {shlex.quote(sql)}"
        )

    def python(self, code: str, *args: str) -> object:
        """Run code with the installed venv's Python (psycopg, redis, boto3) and the
        units' environment file; its stdout is JSON."""
        argv = " ".join(shlex.quote(a) for a in args)
        text = self.out(
            "set -a; . /etc/m10jobs/env; set +a; "
            f"/opt/m10jobs/bin/python -c {shlex.quote(code)} {argv}"
        )
        return json.loads(text)

    # -- lifecycle ------------------------------------------------------------------------
    def launch(self, network: Network, mask: Sequence[str]) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        argv = [
            "unshare",
            "--pid",
            "--fork",
            "--mount",
            "--uts",
            "--ipc",
            str(BOOT_SCRIPT),
            self.name,
            str(self.base),
            str(CHECKOUT),
            self.cgroup,
            *mask,
        ]
        with open(self.log, "wb") as log:
            self.launcher = network.popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._started = time.monotonic()

    def wait_running(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Until `systemctl is-system-running` says running (or degraded: the test reports
        which units failed)."""
        assert self.launcher is not None
        deadline = self._started + timeout
        while not self.pid:
            children = Path(f"/proc/{self.launcher.pid}/task/{self.launcher.pid}/children")
            with contextlib.suppress(OSError):
                text = children.read_text().split()
                if text:
                    self.pid = int(text[0])
                    break
            if self.launcher.poll() is not None or time.monotonic() > deadline:
                raise HostError(f"[{self.name}] did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)
        state = ""
        while time.monotonic() < deadline:
            if self.launcher.poll() is not None:
                break
            state = self.sh("systemctl is-system-running", check=False, timeout=30).stdout
            state = state.strip()
            if state in ("running", "degraded"):
                self.boot_seconds = time.monotonic() - self._started
                if state == "degraded":  # not ours to judge, but worth seeing
                    print(
                        f"[{self.name}] degraded:\n"
                        + self.out("systemctl --failed --no-legend --plain"),
                        flush=True,
                    )
                return
            time.sleep(0.3)
        raise HostError(
            f"[{self.name}] not running after {timeout:.0f}s (state {state!r}):\n"
            f"{self.log.read_text()[-3000:]}"
        )

    def kill(self) -> None:
        """SIGKILL PID 1: the kernel ends every process of the PID namespace; the mount
        namespace (overlay, tmpfs) goes with the last of them.  Then drop our cgroups."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.launcher is not None:
            try:
                self.launcher.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.launcher.kill()
        remove_cgroups(self.cgroup)
        with contextlib.suppress(OSError):
            self.base.rmdir()


def hierarchies() -> list[Path]:
    """The cgroup hierarchies boot-host.sh gives each host a directory in (the same rule)."""
    if _fstype(CGROUP_ROOT) == "cgroup2":
        return [CGROUP_ROOT]
    return [d for d in CGROUP_ROOT.iterdir() if d.is_dir() and os.path.ismount(d)]


def _fstype(path: Path) -> str:
    """The type of the file system mounted at path (the last mount there wins)."""
    found = ""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, target, fstype, *_ = line.split()
        if target == str(path):
            found = fstype
    return found


def remove_cgroups(name: str, timeout: float = 20.0) -> None:
    """rmdir a host's cgroup subtree in every hierarchy, deepest first (a cgroup whose
    processes are still exiting is busy for a moment)."""
    deadline = time.monotonic() + timeout
    for hierarchy in hierarchies():
        top = hierarchy / name
        if not top.is_dir():
            continue
        while True:
            dirs = sorted(
                (Path(d) for d, _, _ in os.walk(top)), key=lambda p: len(p.parts), reverse=True
            )
            busy = False
            for d in dirs:
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    busy = True
            if not busy or time.monotonic() > deadline:
                break
            time.sleep(0.2)


class Cluster:
    """Hosts booted in parallel in one private network; the first one serves PostgreSQL,
    Redis and (on request) an S3 endpoint (moto's server, started in the same network)."""

    def __init__(self, names: Sequence[str], workdir: Path) -> None:
        self.tag = "m10sys-" + secrets.token_hex(3)
        self.network = Network(self.tag)
        self.workdir = workdir
        self.hosts = [
            Host(
                n,
                self.tag,
                Path(tempfile.mkdtemp(prefix=f"{self.tag}-{n}-")),
                workdir / f"{n}.boot.log",
            )
            for n in names
        ]
        self.moto: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> Host:
        return self.hosts[0]

    @property
    def record(self) -> Path:
        return RECORDS / f"{self.tag}.json"

    def boot(self) -> list[Host]:
        RECORDS.mkdir(mode=0o700, exist_ok=True)
        self.record.write_text(
            json.dumps(
                {
                    "owner": os.getpid(),
                    "netns": self.network.name,
                    "cgroups": [h.cgroup for h in self.hosts],
                    "bases": [str(h.base) for h in self.hosts],
                }
            )
        )
        self.network.create()
        for i, host in enumerate(self.hosts):
            host.launch(self.network, () if i == 0 else SERVER_UNITS)
        with ThreadPoolExecutor(len(self.hosts)) as pool:
            list(pool.map(lambda h: h.wait_running(), self.hosts))
        return self.hosts

    def start_s3(self, port: int = 5000) -> str:
        moto = Path(sys.executable).with_name("moto_server")
        with open(self.workdir / "moto.log", "wb") as log:
            self.moto = self.network.popen(
                [str(moto), "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return f"http://127.0.0.1:{port}"

    def teardown(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(Exception):
                host.kill()
        if self.moto is not None:
            self.moto.kill()
            self.moto.wait()
        self.network.delete()
        self.record.unlink(missing_ok=True)


def kill_cgroup(name: str) -> None:
    """SIGKILL every process in a host's cgroup subtree (its PID 1 first: the rest follow)."""
    for hierarchy in hierarchies():
        top = hierarchy / name
        pids = (
            [
                int(p)
                for procs in sorted(top.rglob("cgroup.procs"), key=lambda p: len(p.parts))
                for p in procs.read_text().split()
            ]
            if top.is_dir()
            else []
        )
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:  # a zombie (dead, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def reap_stale() -> list[str]:
    """End the clusters of runs that died without tearing down (their owner is gone); the
    tags reaped.  Clusters of a live run (another agent's, a parallel CI job) are left alone."""
    reaped = []
    for record in sorted(RECORDS.glob("*.json")) if RECORDS.is_dir() else []:
        data = json.loads(record.read_text())
        if _alive(data["owner"]):
            continue
        for name in data["cgroups"]:
            kill_cgroup(name)
        for name in data["cgroups"]:
            remove_cgroups(name)
        subprocess.run(
            ["ip", "netns", "delete", data["netns"]], check=False, stderr=subprocess.DEVNULL
        )
        for base in data["bases"]:
            with contextlib.suppress(OSError):
                os.rmdir(base)
        record.unlink(missing_ok=True)
        reaped.append(record.stem)
    return reaped


@contextlib.contextmanager
def cluster(names: Sequence[str], workdir: Path) -> Iterator[Cluster]:
    c = Cluster(names, workdir)
    try:
        c.boot()
        yield c
    finally:
        c.teardown()


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Print how long a step took (pytest -s, or the captured output of a failure)."""
    started = time.monotonic()
    try:
        yield
    finally:
        print(f"[{time.monotonic() - started:6.1f}s] {name}", flush=True)
