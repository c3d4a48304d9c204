"""An operator's steps on a booted host: the README's install section, run line by line as it
is written (parsed from README.md, so the test follows the README and cannot drift from it),
the database host's packages, the environment the test adds (object store, Redis)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.system.harness import CHECKOUT, Host

README = CHECKOUT / "README.md"
RUNBOOK = CHECKOUT / "docs" / "runbook.md"
ENDPOINT_BUCKET = "m10-ops"
UNINSTALL = "make uninstall"
HAND_RUN = "m10 run JOB"
# The README's install block is split by these comments: the lines before the first run on
# every host, the lines after "once per database" on the database host only, the rest on
# every host again.
ONCE_PER_DATABASE = "# once per database"
ON_EVERY_HOST = "# on every host"
KEPT = ("/etc/m10jobs", "/var/lib/m10jobs", "/var/log/m10")
"""What README says `make uninstall` keeps on purpose."""


def says(*commands: str, doc: Path = README) -> None:
    text = doc.read_text()
    missing = [c for c in commands if c not in text]
    assert not missing, f"{doc.name} no longer says {missing}: bring tests/system in line"


@dataclass(frozen=True)
class Install:
    """The README's install block: (install, database, configure) lines."""

    install: list[str]
    database: list[str]
    configure: list[str]

    @classmethod
    def from_readme(cls, text: str | None = None) -> Install:
        text = README.read_text() if text is None else text
        section = re.search(r"^## Installing.*?^```sh\n(.*?)^```", text, re.S | re.M)
        assert section, "README.md has no '## Installing' section with a ```sh block"
        lines = [ln.rstrip() for ln in section.group(1).splitlines() if ln.strip()]
        stages: list[list[str]] = [[], [], []]
        stage = 0
        for line in lines:
            if line.startswith(ONCE_PER_DATABASE):
                stage = 1
            elif line.startswith(ON_EVERY_HOST):
                stage = 2
            elif not line.startswith("#"):
                stages[stage].append(line)
        assert all(stages), (
            f"README's install block lost its '{ONCE_PER_DATABASE}' / "
            f"'{ON_EVERY_HOST}' parts: bring tests/system in line\n{lines}"
        )
        return cls(*stages)


def run_lines(
    host: Host, lines: list[str], wheelhouse: Path, checkout: Path = CHECKOUT
) -> list[str]:
    """Each line as written, in the checkout (or another release's source tree), as root;
    each line's output.  The hosts are offline: pip resolves
    from the session's wheelhouse, and an `apt-get install` line is checked, not run (the
    machine installed those packages before booting: the hosts' root is its overlay)."""
    offline = f"export PIP_NO_INDEX=1 PIP_FIND_LINKS={shlex.quote(str(wheelhouse))}"
    outputs = []
    for line in lines:
        if line.startswith("apt-get install"):
            packages = [w for w in shlex.split(line.split("#", 1)[0])[2:] if not w.startswith("-")]
            status = host.out(
                "dpkg-query -W -f='${db:Status-Abbrev} ${Package}\\n' "
                + " ".join(map(shlex.quote, packages)),
                check=False,
            )
            assert [ln for ln in status.splitlines() if ln.startswith("ii ")] and all(
                ln.startswith("ii ") for ln in status.splitlines()
            ), (line, status)
            outputs.append(status)
            continue
        done = host.sh(f"{offline}; cd {shlex.quote(str(checkout))}\n{line}", timeout=400)
        outputs.append(done.stdout + done.stderr)
    return outputs


def serve_database(host: Host) -> None:
    """The database host: Debian's cluster (created when the image has none) and its
    redis-server running as units."""
    host.sh("pg_lsclusters -h | grep -q . || pg_createcluster 15 main --start")
    host.sh("for i in $(seq 100); do pg_isready -q && exit 0; sleep 0.2; done; exit 1")
    host.sh("systemctl is-active redis-server || systemctl start redis-server")
    host.sh(
        "for i in $(seq 100); do redis-cli ping | grep -q PONG && exit 0; sleep 0.2; done; exit 1"
    )


def environment(s3_url: str | None) -> dict[str, str]:
    """What the test adds to /etc/m10jobs/env beyond the README's database line."""
    env = {"M10_REDIS_URL": "redis://localhost:6379/0"}
    if s3_url:
        env |= {
            "M10_R2_ENDPOINT_URL": s3_url,
            "M10_R2_BUCKET": ENDPOINT_BUCKET,
            "AWS_ACCESS_KEY_ID": "system-test",
            "AWS_SECRET_ACCESS_KEY": "system-test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    return env


def add_environment(host: Host, env: dict[str, str]) -> None:
    """Appended in place: the file keeps install's mode and owner."""
    lines = "".join(f"{k}={v}\n" for k, v in env.items())
    host.sh(f"cat >> /etc/m10jobs/env <<'EOF'\n{lines}EOF")


def create_bucket(host: Host) -> None:
    """The object store's bucket (R2 has it before install; moto starts empty)."""
    host.python(
        "import boto3, json, os; boto3.client('s3', endpoint_url="
        "os.environ['M10_R2_ENDPOINT_URL']).create_bucket(Bucket=os.environ["
        "'M10_R2_BUCKET']); print(json.dumps(True))"
    )


def uninstall(host: Host) -> None:
    says(UNINSTALL)
    host.sh(f"cd {shlex.quote(str(CHECKOUT))} && {UNINSTALL}")


OUTBOX_LINGER_S = 2
"""The system tests' outbox linger (the shipped 115 s would make every pass, and the hand-over
the tests watch, take two minutes)."""


def short_linger(host: Host, seconds: float = OUTBOX_LINGER_S) -> None:
    """Set [outbox] linger_seconds in the installed config (its example line, edited in place:
    a second [outbox] table would be invalid TOML)."""
    toml = "/etc/m10jobs/m10jobs.toml"
    host.sh(f"grep -q '^linger_seconds = ' {toml}")
    host.sh(f"sed -i 's|^linger_seconds = .*|linger_seconds = {seconds}|' {toml}")
