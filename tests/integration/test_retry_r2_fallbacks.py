"""Fallback uploads and m10-retry-r2-fallbacks against moto's S3 server."""

from __future__ import annotations

import json
import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pytest

from m10jobs.config import load_config
from m10jobs.edges.fallback import META_SUFFIX, retry_local_fallback
from tests.stats_support import closed_endpoint, seed_day, summary

REPO = Path(__file__).resolve().parents[2]


def s3(env: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["M10_R2_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


def fallbacks(env: dict[str, str]) -> Path:
    return Path(env["M10_STATE_DIR"]) / "fallback-uploads"


def metas(env: dict[str, str]) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(fallbacks(env).glob("*" + META_SUFFIX))]


def test_store_down_then_retry_uploads_verified(
    cli: Any, s3_env: dict[str, str], conn: Any
) -> None:
    s3(s3_env).create_bucket(Bucket=s3_env["M10_R2_BUCKET"])
    seed_day(conn, date(2026, 10, 30), 3)
    down = {**s3_env, "M10_R2_ENDPOINT_URL": closed_endpoint()}
    proc = cli("m10-daily-stats", "--start-date", "2026-10-30", "--until", "2026-10-30", env=down)
    assert proc.returncode == 0, proc.stderr  # the export itself succeeded
    assert summary(proc.stdout)["tasks"][1]["summary"]["uploads"] == {
        "m10_stats_2026-10.csv": "fallback"
    }
    [meta] = metas(s3_env)
    csv_bytes = (Path(s3_env["M10_LOG_DIR"]) / "m10_stats_2026-10.csv").read_bytes()
    kept = fallbacks(s3_env) / meta["name"]
    assert kept.read_bytes() == csv_bytes
    assert meta["key"] == "m10/stats/m10_stats_2026-10.csv" and meta["attempts"] == 1
    assert meta["size"] == len(csv_bytes) and meta["bucket"] == s3_env["M10_R2_BUCKET"]
    assert meta["content_type"] == "text/csv" and "first_failure" in meta
    assert meta["last_error"]

    still_down = cli("m10-retry-r2-fallbacks", env=down)
    assert still_down.returncode == 69, still_down.stderr
    assert "object storage is unreachable" in still_down.stderr
    assert metas(s3_env)[0]["attempts"] == 2
    assert not kept.with_name(kept.name + ".uploaded").exists()
    assert 0 <= oldest_pending_age(s3_env) < 600

    back = cli("m10-retry-r2-fallbacks", env=s3_env)
    assert back.returncode == 0, back.stderr
    obj = s3(s3_env).get_object(Bucket=s3_env["M10_R2_BUCKET"], Key=meta["key"])
    assert obj["Body"].read() == csv_bytes
    marker = json.loads(kept.with_name(kept.name + ".uploaded").read_text())
    assert marker["sha256"] == meta["sha256"] and marker["key"] == meta["key"]
    assert kept.exists()  # left for retention
    assert oldest_pending_age(s3_env) == 0

    again = cli("m10-retry-r2-fallbacks", env=s3_env)
    assert again.returncode == 0
    assert summary(again.stdout)["tasks"][0]["summary"] == {"pending": 0, "uploaded": 0}


def oldest_pending_age(env: dict[str, str]) -> float:
    """The m10_fallback_oldest_pending_age_seconds gauge of the last pass."""
    from m10jobs.edges.metrics import parse

    prom = (Path(env["M10_METRICS_DIR"]) / "m10_retry_r2_fallbacks.prom").read_text()
    [age] = [g.value for g in parse(prom) if g.name == "m10_fallback_oldest_pending_age_seconds"]
    return age


def _fallback(env: dict[str, str], data: bytes, key: str) -> Path:
    config = load_config(None, env=env)
    return retry_local_fallback(
        config,
        data,
        "report.csv",
        env["M10_R2_BUCKET"],
        key,
        "text/csv",
        "EndpointConnectionError: test",
    )


@pytest.mark.parametrize("damage", ["tampered", "traversal", "absolute", "garbled"])
def test_refused_entries_are_skipped_and_left_in_place(
    cli: Any, s3_env: dict[str, str], damage: str
) -> None:
    s3(s3_env).create_bucket(Bucket=s3_env["M10_R2_BUCKET"])
    good = _fallback(s3_env, b"fine\n", "ok/fine.csv")
    bad = _fallback(s3_env, b"a,b\n1,2\n", "stats/report.csv")
    meta_path = bad.with_name(bad.name + META_SUFFIX)
    if damage == "tampered":
        bad.write_bytes(b"a,b\n1,3\n")
    elif damage == "garbled":
        meta_path.write_text('{"bucket": "b", "key": ')
    else:
        meta = json.loads(meta_path.read_text())
        meta["key"] = "../../etc/passwd" if damage == "traversal" else "/etc/passwd"
        meta_path.write_text(json.dumps(meta))
    bad_files = {
        p.name: p.read_bytes() for p in fallbacks(s3_env).iterdir() if p.name.startswith(bad.name)
    }
    proc = cli("m10-retry-r2-fallbacks", env=s3_env)
    # Each entry on its own: the bad one is refused and left as it was, the good one
    # is uploaded, and the exit code says something was bad.
    assert proc.returncode == 1, proc.stderr
    assert bad.name in proc.stderr and "refused" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert {
        p.name: p.read_bytes() for p in fallbacks(s3_env).iterdir() if p.name.startswith(bad.name)
    } == bad_files
    keys = [
        o["Key"] for o in s3(s3_env).list_objects_v2(Bucket=s3_env["M10_R2_BUCKET"])["Contents"]
    ]
    assert keys == ["ok/fine.csv"]
    assert good.with_name(good.name + ".uploaded").exists()
    # Alone, the bad entry is 65: nothing else was to be done.
    again = cli("m10-retry-r2-fallbacks", env=s3_env)
    assert again.returncode == 65, again.stderr
    assert bad.name in again.stderr


def test_files_failing_past_alert_age_exit_1(
    cli: Any, s3_env: dict[str, str], tmp_path: Path
) -> None:
    kept = _fallback(s3_env, b"x\n", "stats/x.csv")  # the bucket does not exist
    config = tmp_path / "m10.toml"
    config.write_text("[retry_r2_fallbacks]\nalert_after_hours = 0\n")
    proc = cli("m10-retry-r2-fallbacks", "--config", str(config), env=s3_env)
    assert proc.returncode == 1, proc.stderr
    assert "kept failing" in proc.stderr and kept.name in proc.stderr
    assert metas(s3_env)[0]["attempts"] == 2


def test_same_content_fallback_is_reused(s3_env: dict[str, str]) -> None:
    first = _fallback(s3_env, b"same\n", "k/a.csv")
    second = _fallback(s3_env, b"same\n", "k/a.csv")
    third = _fallback(s3_env, b"newer\n", "k/a.csv")
    assert first == second != third
    attempts = {m["name"]: m["attempts"] for m in metas(s3_env)}
    assert attempts == {first.name: 2, third.name: 1}
    # the older content handed over again: reused, and again the key's newest version
    assert _fallback(s3_env, b"same\n", "k/a.csv") == first
    newest = json.loads(first.with_name(first.name + META_SUFFIX).read_text())
    older = json.loads(third.with_name(third.name + META_SUFFIX).read_text())
    assert newest["attempts"] == 3 and newest["version_at"] > older["version_at"]


def test_uploaded_fallback_is_not_reopened(cli: Any, s3_env: dict[str, str]) -> None:
    """Same content failing again after its upload: a new generation, never the uploaded
    entry (retention may be deleting it), and uploaded again."""
    s3(s3_env).create_bucket(Bucket=s3_env["M10_R2_BUCKET"])
    first = _fallback(s3_env, b"same\n", "k/a.csv")
    assert cli("m10-retry-r2-fallbacks", env=s3_env).returncode == 0
    again = _fallback(s3_env, b"same\n", "k/a.csv")
    assert again != first and "-1-" in again.name and first.name.replace("-0-", "-1-") == again.name
    proc = cli("m10-retry-r2-fallbacks", env=s3_env)
    assert proc.returncode == 0, proc.stderr
    assert summary(proc.stdout)["tasks"][0]["summary"]["uploaded"] == 1


def test_entries_of_earlier_releases_are_retried_in_order(cli: Any, s3_env: dict[str, str]) -> None:
    """Old-format names (time first, no version_at): accepted, ordered by their time,
    newest uploaded, older superseded; and a new write of the key is newer still."""
    import hashlib

    bucket = s3_env["M10_R2_BUCKET"]
    s3(s3_env).create_bucket(Bucket=bucket)
    fallbacks(s3_env).mkdir(parents=True, exist_ok=True)
    olds = []
    for stamp, data in (
        ("20260101T000000000001Z", b"old1\n"),
        ("20260101T000001000000Z", b"old2\n"),
    ):
        sha = hashlib.sha256(data).hexdigest()
        path = fallbacks(s3_env) / f"{stamp}-{sha[:12]}-a.csv"
        path.write_bytes(data)
        meta = {
            "schema_version": 1,
            "name": path.name,
            "bucket": bucket,
            "key": "k/a.csv",
            "size": len(data),
            "sha256": sha,
            "content_type": "text/csv",
            "first_failure": "2026-01-01T00:00:00+00:00",
            "attempts": 1,
        }
        path.with_name(path.name + META_SUFFIX).write_text(json.dumps(meta))
        olds.append(path)
    proc = cli("m10-retry-r2-fallbacks", env=s3_env)
    assert proc.returncode == 0, proc.stderr
    assert s3(s3_env).get_object(Bucket=bucket, Key="k/a.csv")["Body"].read() == b"old2\n"
    marker = json.loads(olds[0].with_name(olds[0].name + ".uploaded").read_text())
    assert marker["superseded"] is True


def test_wrapper_loads_env_file_and_passes_exit_codes(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    import sys

    env_file = tmp_path / "m10jobs.env"
    env_file.write_text(
        "".join(f"{k}='{v}'\n" for k, v in s3_env.items() if k.startswith(("M10_", "AWS_")))
    )
    bare = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "M10_ENV_FILE": str(env_file)}
    script = str(REPO / "scripts/ops/retry_r2_fallbacks.sh")
    ok = subprocess.run([script, "--dry-run"], env=bare, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert summary(ok.stdout)["job"] == "m10-retry-r2-fallbacks"
    usage = subprocess.run(
        [script, "--no-such-flag"], env=bare, capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2
    _fallback(s3_env, b"x\n", "/abs")
    refused = subprocess.run([script], env=bare, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 65
    post = subprocess.run(
        [str(REPO / "scripts/ops/postflight.sh")],
        env=bare,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert post.returncode == 65 and "no m10_stats_YYYY-MM.csv found" in post.stdout


def test_older_versions_never_overwrite_newer_content(
    cli: Any, s3_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from m10jobs.edges.fallback import upload

    bucket = s3_env["M10_R2_BUCKET"]
    s3(s3_env).create_bucket(Bucket=bucket)
    v1 = _fallback(s3_env, b"v1\n", "k/a.csv")
    v2 = _fallback(s3_env, b"v2\n", "k/a.csv")
    proc = cli("m10-retry-r2-fallbacks", env=s3_env)
    assert proc.returncode == 0, proc.stderr
    assert summary(proc.stdout)["tasks"][0]["summary"]["uploaded"] == 1
    assert s3(s3_env).get_object(Bucket=bucket, Key="k/a.csv")["Body"].read() == b"v2\n"
    assert json.loads(v1.with_name(v1.name + ".uploaded").read_text())["superseded"] is True
    assert "superseded" not in json.loads(v2.with_name(v2.name + ".uploaded").read_text())

    # a pending fallback, then a direct upload of newer content: the fallback is retired
    v3 = _fallback(s3_env, b"v3\n", "k/a.csv")
    newer = tmp_path / "a.csv"
    newer.write_bytes(b"v4\n")
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(k, s3_env[k])  # boto3 in this process reads its own environment
    result = upload(load_config(None, env=s3_env), newer, "k/a.csv", logging.getLogger("t"))
    assert result.stored
    # the direct upload leaves the key's stored note; the retry job then retires v3
    [note] = fallbacks(s3_env).glob("*.stored.json")
    proc = cli("m10-retry-r2-fallbacks", env=s3_env)
    assert proc.returncode == 0, proc.stderr
    assert summary(proc.stdout)["tasks"][0]["summary"] == {
        "pending": 1,
        "uploaded": 0,
        "superseded": 1,
    }
    assert json.loads(v3.with_name(v3.name + ".uploaded").read_text())["superseded"] is True
    assert s3(s3_env).get_object(Bucket=bucket, Key="k/a.csv")["Body"].read() == b"v4\n"
    assert not note.exists()  # nothing of the key pending any more: forgotten
