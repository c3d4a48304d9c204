"""docs/contract.md exit codes for the hostile cases of issue 13 that are not a file's
shape (those are in test_hostile_inputs.py): URL/DSN syntax, refused logins, a store
down under retention, oversized or odd data, signals' neighbours."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from m10jobs.config import load_config
from m10jobs.edges import fallback
from tests.conftest import BIN
from tests.stats_support import closed_endpoint


def errors(stderr: str) -> list[str]:
    return [
        json.loads(line)["message"]
        for line in stderr.splitlines()
        if line.startswith("{") and json.loads(line)["level"] == "ERROR"
    ]


@pytest.mark.parametrize(
    ("dsn", "named"),
    [
        ("postgresql://m10:pw@127.0.0.1:99999/m10", "invalid port '99999'"),
        ("postgresql://m10:pw@127.0.0.1:5x/m10", "invalid port '5x'"),
        ("postgresql://m10:pw@127.0.0.1/m10?sslmode=maybe", "invalid sslmode 'maybe'"),
        ("postgresql://m10:Sec@ret-tail-9@127.0.0.1/m10", "unencoded '@'"),
        # a byte of the environment that is not UTF-8 (the lease probe must not trip on it)
        ("postgresql://m10:Sec\udcffret-tail-9@127.0.0.1/m10", "not UTF-8"),
    ],
)
def test_malformed_dsn_is_78_and_never_printed(
    cli: Any, env: dict[str, str], dsn: str, named: str
) -> None:
    p = cli("m10-canary", env={**env, "M10_DATABASE_URL": dsn})
    assert p.returncode == 78, p.stderr
    [line] = errors(p.stderr)
    assert named in line and "Traceback" not in p.stderr
    assert "ret-tail-9" not in p.stderr + p.stdout and "Sec" not in p.stderr + p.stdout


@pytest.mark.parametrize("url", ["redis://localhost:99999/0", "redis://localhost:port/0"])
def test_malformed_redis_url_is_78(cli: Any, env: dict[str, str], url: str) -> None:
    p = cli("m10-outbox-processor", env={**env, "M10_REDIS_URL": url})
    assert p.returncode == 78, p.stderr
    assert any("redis_url" in m and "not a valid Redis URL" in m for m in errors(p.stderr))
    assert "Traceback" not in p.stderr


def test_refused_login_is_69_saying_authentication_failed(
    cli: Any, env: dict[str, str], conn: Any, dsn: str
) -> None:
    conn.execute("DROP ROLE IF EXISTS m10_nologin")
    conn.execute("CREATE ROLE m10_nologin NOLOGIN")
    refused = dsn.replace("postgres@", "m10_nologin@", 1)
    p = cli("m10-canary", env={**env, "M10_DATABASE_URL": refused})
    assert p.returncode == 69, p.stderr
    [line] = errors(p.stderr)
    assert "authentication failed" in line and "unreachable" not in line


def test_retention_with_object_storage_down_is_69(cli: Any, s3_env: dict[str, str]) -> None:
    old_csv = Path(s3_env["M10_LOG_DIR"]) / "m10_stats_2020-01.csv"  # archived, then deleted
    old_csv.parent.mkdir(parents=True)
    old_csv.write_text("date,n\n2020-01-01,1\n")
    down = {**s3_env, "M10_R2_ENDPOINT_URL": closed_endpoint()}
    p = cli("m10", "run", "retention_files", env=down)
    assert p.returncode == 69, p.stderr
    assert any("object storage is unreachable" in m for m in errors(p.stderr))
    assert old_csv.exists()  # nothing deleted without its archive


def test_a_300_mb_report_is_65_without_reading_it(env: dict[str, str], tmp_path: Path) -> None:
    reports = Path(env["M10_STATE_DIR"]) / "canary" / "reports"
    reports.mkdir(parents=True)
    with (reports / "latest_report.json").open("wb") as f:
        f.write(b'{"schema_version": 1, "pad": "')
        f.truncate(300 << 20)
    cfg = tmp_path / "r.toml"
    cfg.write_text('[rollback]\ncommand = ["true"]\n')
    probe = (
        "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
        "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [str(BIN / "python"), "-c", probe, str(BIN / "m10-rollback")],
        env={**env, "M10_CONFIG": str(cfg)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    code, rss_kib = map(int, out.stdout.split()[-2:])
    assert code == 65, out.stderr
    assert "over the 16 MiB limit" in out.stderr
    assert rss_kib < 150 * 1024, rss_kib  # the file was never read into memory
    print(f"300 MB report: exit {code}, max RSS {rss_kib // 1024} MiB")


def _entry(env: dict[str, str], name: str = "report.csv", data: bytes = b"x\n") -> fallback.Entry:
    config = load_config(None, env={**env, "M10_R2_BUCKET": "b"})
    return fallback.Entry(
        fallback.retry_local_fallback(config, data, name, "b", "k/x.csv", "text/csv", "down")
    )


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("first_failure", "2026-11-01T10:00:00", "has no time zone"),
        ("attempts", "many", "'attempts' is not a count"),
    ],
)
def test_odd_meta_fields_are_65_before_any_upload(
    cli: Any, s3_env: dict[str, str], field: str, value: str, named: str
) -> None:
    e = _entry(s3_env)
    meta = json.loads(e.meta_path.read_text())
    meta[field] = value
    e.meta_path.write_text(json.dumps(meta))
    p = cli("m10-retry-r2-fallbacks", env=s3_env)
    assert p.returncode == 65, p.stderr
    assert any(named in m and str(e.meta_path) in m for m in errors(p.stderr))
    assert not e.uploaded_path.exists() and "Traceback" not in p.stderr


def test_an_entry_name_too_long_for_its_marker_is_refused_before_upload(
    cli: Any, s3_env: dict[str, str]
) -> None:
    e = _entry(s3_env)
    long = e.path.with_name("n" * 239)
    e.path.rename(long)
    e.meta_path.rename(long.with_name(long.name + fallback.META_SUFFIX))
    p = cli("m10-retry-r2-fallbacks", env=s3_env)
    assert p.returncode == 65, p.stderr
    assert any("name is longer than" in m for m in errors(p.stderr))
    assert not list(long.parent.glob("*.uploaded"))
    # retry_local_fallback itself never makes such a name
    e2 = _entry(s3_env, "y" * 250, b"other\n")
    assert len(e2.path.name) <= fallback.MAX_NAME_BYTES


def test_enospc_names_the_file(tmp_path: Path) -> None:
    """A write that fails (here: the target is a directory) names the file."""
    from m10jobs.edges.files import atomic_write
    from m10jobs.errors import WriteFailed

    target = tmp_path / "x.json"
    target.mkdir()
    with pytest.raises(WriteFailed) as caught:
        atomic_write(target, b"{}")
    assert str(target) in str(caught.value) and "free space" in str(caught.value)
