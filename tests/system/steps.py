"""An operator's steps on a booted host: the README's install section, the database host's
setup, the environment file.  Each README command the tests run is checked to appear in the
README verbatim (`readme_says`), so the tests and the README cannot drift apart silently."""

from __future__ import annotations

import shlex
from pathlib import Path

from tests.system.harness import CHECKOUT, DB_PASSWORD, Host

README = CHECKOUT / "README.md"
RUNBOOK = CHECKOUT / "docs" / "runbook.md"
DB_NAME = "platform"
DB_LOGIN = "m10_ops_login"
ENDPOINT_BUCKET = "m10-ops"
INSTALL = "make install"
MIGRATE = "m10 db migrate"
ENABLE = "systemctl enable --now m10jobs.target"
UNINSTALL = "make uninstall"
HAND_RUN = "m10 run JOB"
PIP_OFFLINE = "PIP_NO_INDEX=1 PIP_FIND_LINKS={wheelhouse}"


def readme_says(*commands: str, doc: Path = README) -> None:
    text = doc.read_text()
    missing = [c for c in commands if c not in text]
    assert not missing, f"{doc.name} no longer says {missing}: bring tests/system in line"


def runbook_says(*commands: str) -> None:
    readme_says(*commands, doc=RUNBOOK)


def serve_database(host: Host) -> None:
    """The database host: Debian's cluster (created when the image has none) and its
    redis-server running as units; a login role for the jobs and their database."""
    host.sh("pg_lsclusters -h | grep -q . || pg_createcluster 15 main --start")
    host.sh("for i in $(seq 100); do pg_isready -q && exit 0; sleep 0.2; done; exit 1")
    host.sh("systemctl is-active redis-server || systemctl start redis-server")
    host.sh("for i in $(seq 100); do redis-cli ping | grep -q PONG && exit 0; sleep 0.2; done;"
            " exit 1")
    host.psql(f"CREATE ROLE {DB_LOGIN} LOGIN PASSWORD '{DB_PASSWORD}'", db="postgres")
    host.sh(f"runuser -u postgres -- createdb --owner={DB_LOGIN} {DB_NAME}")


def migrate(host: Host) -> None:
    """`m10 db migrate` (README) by the database superuser (the migrations create roles and
    hand objects to m10_ops), then the jobs' login joins m10_ops, which owns m10_recovery."""
    readme_says(MIGRATE)
    host.sh("runuser -u postgres -- env M10_CONFIG=/dev/null "
            f"M10_DATABASE_URL=postgresql:///{DB_NAME} {MIGRATE}")
    host.psql(f"GRANT m10_ops TO {DB_LOGIN}")


def environment(s3_url: str | None) -> dict[str, str]:
    env = {"M10_DATABASE_URL":
           f"postgresql://{DB_LOGIN}:{DB_PASSWORD}@127.0.0.1:5432/{DB_NAME}",
           "M10_REDIS_URL": "redis://127.0.0.1:6379/0"}
    if s3_url:
        env |= {"M10_R2_ENDPOINT_URL": s3_url, "M10_R2_BUCKET": ENDPOINT_BUCKET,
                "AWS_ACCESS_KEY_ID": "system-test", "AWS_SECRET_ACCESS_KEY": "system-test",
                "AWS_DEFAULT_REGION": "us-east-1"}
    return env


def install(host: Host, wheelhouse: Path, env: dict[str, str]) -> None:
    """README: `make install` in the checkout with the system Python (a root shell's PATH),
    offline from the session's wheelhouse; then the operator fills /etc/m10jobs/env (its
    mode and owner are install's: written in place, never replaced)."""
    readme_says(INSTALL)
    offline = PIP_OFFLINE.format(wheelhouse=wheelhouse)
    host.sh(f"cd {shlex.quote(str(CHECKOUT))} && env {offline} {INSTALL}", timeout=400)
    lines = "".join(f"{k}={v}\n" for k, v in env.items())
    host.sh(f"cat >> /etc/m10jobs/env <<'EOF'\n{lines}EOF")


def enable_timers(host: Host) -> None:
    readme_says(ENABLE)
    host.sh(ENABLE)


def create_bucket(host: Host) -> None:
    """The object store's bucket (R2 has it before install; moto starts empty)."""
    host.python("import boto3, json, os; boto3.client('s3', endpoint_url="
                "os.environ['M10_R2_ENDPOINT_URL']).create_bucket(Bucket=os.environ["
                "'M10_R2_BUCKET']); print(json.dumps(True))")


def uninstall(host: Host) -> None:
    readme_says(UNINSTALL)
    host.sh(f"cd {shlex.quote(str(CHECKOUT))} && {UNINSTALL}")
