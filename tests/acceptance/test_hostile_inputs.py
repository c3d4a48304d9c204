"""Every file a job reads, in every hostile shape: a clear answer, nothing lost.

Table-driven: for each file (fallback meta, fallback data, `.uploaded` marker,
stats CSV, `.processed`, latest_report.json, the config file) and each variant
(missing, empty, truncated, garbage, wrong type, huge, deeply nested, non-UTF-8,
symlink inside and outside the state dir, FIFO, directory, unreadable), the job
that reads it runs as a real process and must: exit with the docs/contract.md code,
name the file in an error line without a traceback, act on nothing and lose
nothing (the state tree is byte-identical afterwards, unless the answer is a
repair: an untrusted `.uploaded` marker means "upload again"), never hang (a
FIFO), never leak a symlink target's content, and leave no lease held.

"unreadable" runs the job as `nobody` (setpriv): root reads a mode-000 file.  From
a checkout `nobody` cannot reach (a 0700 directory) it runs a traversable copy of the
venv (`nobody_bin`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from m10jobs.config import load_config
from m10jobs.edges import fallback
from m10jobs.jobs.stats.statsfile import COLUMNS, marker_for, render
from tests.conftest import BIN
from tests.nobody_support import as_nobody

VARIANTS = (
    "missing",
    "empty",
    "truncated",
    "garbage",
    "wrong_type",
    "huge",
    "deeply_nested",
    "non_utf8",
    "symlink_inside",
    "symlink_outside",
    "fifo",
    "directory",
    "unreadable",
)
SECRET_LINE = b"root:x:0:0:do-not-leak-this-line:/root:/bin/bash\n"
DATA = b"date,n\n2026-10-01,1\n"
BUCKET = "hostile"


@dataclass
class World:
    """One case's directories (under a 0755 temp dir, so `nobody` can be given them)."""

    base: Path
    env: dict[str, str]
    target: Path = Path()
    valid: bytes = b""
    args: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def log(self) -> Path:
        return self.base / "log"


def _entry(w: World) -> fallback.Entry:
    config = load_config(None, env={**w.env, "M10_R2_BUCKET": BUCKET})
    path = fallback.retry_local_fallback(
        config,
        DATA,
        "stats.csv",
        BUCKET,
        "m10/stats.csv",
        "text/csv",
        "EndpointConnectionError: test",
    )
    return fallback.Entry(path)


def setup_meta(w: World) -> None:
    e = _entry(w)
    w.target, w.args = e.meta_path, ()
    w.valid = e.meta_path.read_bytes()
    w.extra["script"] = "m10-retry-r2-fallbacks"


def setup_data(w: World) -> None:
    e = _entry(w)
    w.target, w.valid = e.path, DATA
    w.extra["script"] = "m10-retry-r2-fallbacks"


def setup_marker(w: World) -> None:
    e = _entry(w)
    meta = fallback.read_meta(e)
    fallback.mark_uploaded(e, meta, "etag")
    w.target, w.valid = e.uploaded_path, e.uploaded_path.read_bytes()
    w.extra["script"] = "m10-retry-r2-fallbacks"
    w.extra["entry"] = e


def _month(w: World) -> Path:
    rows = [{c: (d if c == "date" else "1") for c in COLUMNS} for d in ("2026-10-01", "2026-10-02")]
    csv = w.log / "m10_stats_2026-10.csv"
    csv.parent.mkdir(parents=True)
    data = render(rows)
    csv.write_bytes(data)
    (w.log / "m10_stats_2026-10.csv.processed").write_text(json.dumps(marker_for(csv, data, rows)))
    w.args = ("--until", "2026-10-03")
    w.extra["script"] = "m10-daily-stats"
    return csv


def _marker_matches(marker: Path) -> bool:
    csv = marker.with_name(marker.name.removesuffix(".processed"))
    got = json.loads(marker.read_text())
    return got["sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()


def setup_csv(w: World) -> None:
    w.target = _month(w)
    w.valid = w.target.read_bytes()


def setup_processed(w: World) -> None:
    csv = _month(w)
    w.target = csv.with_name(csv.name + ".processed")
    w.valid = w.target.read_bytes()


def setup_report(w: World) -> None:
    reports = w.state / "canary" / "reports"
    reports.mkdir(parents=True)
    now = datetime.now(UTC).isoformat()
    w.target = reports / "latest_report.json"
    w.valid = json.dumps(
        {
            "schema_version": 1,
            "run_id": "r1",
            "verdict": "fail",
            "score": 0.1,
            "started_at": now,
            "finished_at": now,
            "probes": [],
        }
    ).encode()
    w.target.write_bytes(w.valid)
    ran = w.base / "rollback-ran"
    w.extra["ran"] = ran
    cfg = w.base / "etc" / "rollback.toml"
    cfg.parent.mkdir()
    cfg.write_text(f'[rollback]\ncommand = ["touch", "{ran}"]\n')
    w.env["M10_CONFIG"] = str(cfg)
    w.extra["script"] = "m10-rollback"


def setup_config(w: World) -> None:
    w.target = w.base / "etc" / "m10jobs.toml"
    w.target.parent.mkdir()
    w.valid = b'[daily_stats]\ntimezone = "UTC"\n'
    w.target.write_bytes(w.valid)
    w.env["M10_CONFIG"] = str(w.target)
    w.args = ("--start-date", "2026-10-03", "--until", "2026-10-03")
    w.extra["script"] = "m10-daily-stats"


@dataclass(frozen=True)
class Target:
    name: str
    setup: Callable[[World], None]
    code: int  # the answer for most variants
    wrong_type: bytes
    cap: int  # the reader's size cap for this kind (huge = one byte more)
    codes: dict[str, int] = field(default_factory=dict)  # variants answered otherwise
    repairs: bool = False  # exit 0 = the file was replaced by a verified one
    nested: bytes = b"[" * 50_000 + b"]" * 50_000
    repaired: Callable[[World], bool] | None = None  # how a repair is checked


TARGETS = [
    Target(
        "fallback_meta",
        setup_meta,
        65,
        json.dumps(
            {
                "bucket": BUCKET,
                "key": "m10/stats.csv",
                "size": 1,
                "sha256": "0" * 64,
                "attempts": "many",
            }
        ).encode(),
        64 << 10,
        {"missing": 0},
    ),
    Target("fallback_data", setup_data, 65, b'{"not": "the data"}', 64 << 20),
    Target(
        "uploaded_marker",
        setup_marker,
        0,
        b'["uploaded"]',
        64 << 10,
        {"directory": 65},
        repairs=True,
        repaired=lambda w: fallback.marker_problem(w.extra["entry"]) is None,
    ),
    Target("stats_csv", setup_csv, 65, b'{"date": "2026-10-01"}\n', 4 << 20, {"missing": 0}),
    # The marker only describes the CSV: a damaged one is rewritten from it (the export
    # heals the pair); one that is not a regular file is refused before any write.
    Target(
        "stats_processed",
        setup_processed,
        0,
        json.dumps({"rows": "two", "sha256": 5}).encode(),
        64 << 10,
        {v: 65 for v in ("symlink_inside", "symlink_outside", "fifo", "directory")},
        repairs=True,
        repaired=lambda w: _marker_matches(w.target),
    ),
    Target(
        "canary_report",
        setup_report,
        65,
        json.dumps({"schema_version": 1, "verdict": ["fail"]}).encode(),
        16 << 20,
        {"missing": 0},
    ),
    Target(
        "config_file",
        setup_config,
        78,
        b"daily_stats = 5\n",
        16 << 20,
        {"empty": 0},
        nested=b"a = " + b"[" * 50_000 + b"]" * 50_000 + b"\n",
    ),
]


def damage(w: World, t: Target, variant: str) -> None:
    """Put the hostile variant in place of w.target."""
    path = w.target
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    content = {
        "empty": b"",
        "truncated": w.valid[: len(w.valid) // 2],
        "garbage": b"this is } not [ what you expect,,,\n",
        "wrong_type": t.wrong_type,
        "deeply_nested": t.nested,
        "non_utf8": b"\xff\xfe\xfa" + w.valid,
        "unreadable": w.valid,
    }
    if variant == "missing":
        return
    if variant in content:
        path.write_bytes(content[variant])
    elif variant == "huge":
        with path.open("wb") as f:
            f.truncate(t.cap + 1)  # sparse: cheap to make, must be refused before reading
    elif variant == "symlink_inside":
        twin = path.with_name("twin-" + path.name)  # a valid file in the same directory
        twin.write_bytes(w.valid)
        path.symlink_to(twin.name)
    elif variant == "symlink_outside":
        outside = Path(tempfile.mkdtemp(prefix="m10-outside-")) / "passwd"
        # The fallback case: the target holds exactly what the meta expects (the
        # /etc/passwd upload of the issue); the others: a line that must not leak.
        outside.write_bytes(w.valid if t.name == "fallback_data" else SECRET_LINE)
        w.extra["outside"] = outside
        path.symlink_to(outside)
    elif variant == "fifo":
        os.mkfifo(path)
    elif variant == "directory":
        path.mkdir()
    if variant == "unreadable":
        path.chmod(0)


def tree(root: Path) -> dict[str, Any]:
    """Everything under root, by relative path: kind and content (lock files aside)."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if name == ".m10jobs.lock":
                continue
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            elif p.is_fifo():
                out[rel] = ("fifo",)
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture
def world(env: dict[str, str]) -> Iterator[World]:
    base = Path(tempfile.mkdtemp(prefix="m10-hostile-"))
    os.chmod(base, 0o755)
    w = World(
        base,
        {
            **env,
            "M10_STATE_DIR": str(base / "state"),
            "M10_LOG_DIR": str(base / "log"),
            "M10_METRICS_DIR": str(base / "metrics"),
            "M10_LEASE_TTL_SECONDS": "60",
        },
    )
    w.env.pop("M10_CONFIG", None)
    yield w
    shutil.rmtree(base, ignore_errors=True)
    if "outside" in w.extra:
        shutil.rmtree(w.extra["outside"].parent, ignore_errors=True)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("t", TARGETS, ids=[t.name for t in TARGETS])
def test_hostile_file(
    t: Target, variant: str, world: World, conn: Any, request: pytest.FixtureRequest
) -> None:
    w = world
    if t.repairs:  # an untrusted marker is answered by uploading again: a real store
        s3_env = request.getfixturevalue("s3_env")
        w.env.update(
            {
                k: s3_env[k]
                for k in (
                    "M10_R2_ENDPOINT_URL",
                    "AWS_ACCESS_KEY_ID",
                    "AWS_SECRET_ACCESS_KEY",
                    "AWS_DEFAULT_REGION",
                )
            }
        )
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=s3_env["M10_R2_ENDPOINT_URL"],
            aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )
        if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
            s3.create_bucket(Bucket=BUCKET)
        s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "m10/stats.csv"}]})
    t.setup(w)
    damage(w, t, variant)
    bin_dir, prefix = BIN, []
    if variant == "unreadable":
        bin_dir, prefix = request.getfixturevalue("nobody_bin"), as_nobody(w.base)
    before = tree(w.base)
    proc = subprocess.run(
        [*prefix, str(bin_dir / w.extra["script"]), *w.args],
        env=w.env,
        capture_output=True,
        text=True,
        timeout=60,
    )  # a FIFO must not hang
    want = t.codes.get(variant, t.code)
    assert proc.returncode == want, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "do-not-leak" not in proc.stderr + proc.stdout  # a symlink target is never read
    if want != 0:
        errors = [
            json.loads(line)["message"]
            for line in proc.stderr.splitlines()
            if line.startswith("{") and json.loads(line).get("level") == "ERROR"
        ]
        assert any(str(w.target) in m for m in errors), errors  # names the file
    if want != 0 or not t.repairs:
        # Nothing acted on, nothing lost: every file as it was (a refusal), or the
        # pass did its job around a missing optional file without touching the rest.
        after = tree(w.base)
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        if want == 0:  # a missing marker/CSV/report/meta or an empty config: the pass ran
            changed = {
                k for k in changed if not k.startswith(("log/", "metrics/")) and k not in ("log",)
            }
        assert {k for k in changed if not k.startswith("metrics")} == set(), changed
        if "ran" in w.extra:
            assert not w.extra["ran"].exists()  # the rollback command did not run
    else:
        # The file was not trusted and was rebuilt from what it describes (an upload
        # marker: the entry uploaded again; a stats marker: rewritten from its CSV).
        assert t.repaired is not None and t.repaired(w)
        if variant != "missing" and t.name == "uploaded_marker":
            assert str(w.target) in proc.stderr
    if "outside" in w.extra and t.name != "fallback_data":
        assert w.extra["outside"].read_bytes() == SECRET_LINE  # never written through
    live = conn.execute(
        "SELECT lock_name FROM m10_recovery.distributed_locks WHERE expires_at > now()"
    ).fetchall()
    assert live == []  # the lease was released
