"""The stats CSV + `.processed` pair closes its own crash windows, and a month owed
to object storage reaches it once storage is back, even after a full disk."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import boto3

from m10jobs.jobs.stats.statsfile import month_files
from tests.conftest import BIN
from tests.lease_support import expire_leases
from tests.stats_support import closed_endpoint, stats_files

FIRST, LAST = date(2026, 7, 1), date(2026, 9, 30)


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "m10-daily-stats"), *args], env=env, capture_output=True, text=True, timeout=120
    )


def _postflight(env: dict[str, str], as_of: date) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "m10"), "postflight", "--as-of", as_of.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_kill_between_the_renames_at_random_points_heals_on_a_plain_rerun(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The state a kill between a CSV's rename and its marker's leaves: months before it
    complete, that month's CSV new with its old marker (or none), later months as before.
    Built at random kill points from two real exports; a plain rerun must end consistent."""
    log = Path(env["M10_LOG_DIR"])
    rng = random.Random(13)
    old_until = FIRST + timedelta(days=40)  # 2026-08-10: the state before the run
    assert (
        _run(env, "--start-date", FIRST.isoformat(), "--until", old_until.isoformat()).returncode
        == 0
    )
    old = stats_files(log)
    assert _run(env, "--until", LAST.isoformat()).returncode == 0
    new = stats_files(log)
    months = [p.name for p in month_files(log)]  # 07, 08, 09
    for _ in range(6):
        killed_in = rng.randrange(len(months))  # the month whose marker rename never came
        shutil.rmtree(log)
        log.mkdir()
        for i, name in enumerate(months):
            marker = name + ".processed"
            if i < killed_in:
                picks = {name: new[name], marker: new[marker]}
            elif i == killed_in:
                picks = {name: new[name], **({marker: old[marker]} if marker in old else {})}
            else:
                picks = {k: old[k] for k in (name, marker) if k in old}
            for k, v in picks.items():
                (log / k).write_bytes(v)
        rerun = _run(env, "--until", LAST.isoformat())
        assert rerun.returncode == 0, rerun.stderr
        assert stats_files(log) == new  # exactly what an uninterrupted run leaves
        post = _postflight(env, LAST + timedelta(days=1))
        assert post.returncode == 0, post.stdout


def test_sigkill_at_random_moments_then_a_plain_rerun_passes_postflight(
    env: dict[str, str], conn: Any
) -> None:
    log = Path(env["M10_LOG_DIR"])
    args = ["--start-date", FIRST.isoformat(), "--until", LAST.isoformat()]
    rng = random.Random(7)
    for _ in range(4):
        shutil.rmtree(log, ignore_errors=True)
        proc = subprocess.Popen(
            [str(BIN / "m10-daily-stats"), *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 1.2))
        proc.kill()
        proc.wait(10)
        expire_leases(conn)  # the killed holder's lease (if it took it) lapses
        rerun = _run(env, *args)
        assert rerun.returncode == 0, rerun.stderr
        post = _postflight(env, LAST + timedelta(days=1))
        assert post.returncode == 0, post.stdout


def test_an_edited_csv_is_restored_from_the_table_by_a_plain_rerun(env: dict[str, str]) -> None:
    """The figures live in m10_recovery.daily_stats: a hand-edited day is written back."""
    log = Path(env["M10_LOG_DIR"])
    assert _run(env, "--start-date", "2026-07-30", "--until", "2026-08-02").returncode == 0
    july = log / "m10_stats_2026-07.csv"
    good = july.read_bytes()
    july.write_text(july.read_text().replace("2026-07-30,0", "2026-07-30,9", 1))
    assert july.read_bytes() != good
    fixed = _run(env, "--until", "2026-08-02")
    assert fixed.returncode == 0, fixed.stderr
    assert july.read_bytes() == good
    assert _postflight(env, date(2026, 8, 3)).returncode == 0


def test_a_month_owed_to_storage_survives_a_full_disk_and_arrives_later(
    s3_env: dict[str, str],
) -> None:
    """Store down and no room for a fallback copy: the export exits 1 naming the file;
    the month stays owed (in its marker) and is uploaded once the store is back."""
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_env["M10_R2_ENDPOINT_URL"],
        aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=s3_env["M10_R2_BUCKET"])
    log = Path(s3_env["M10_LOG_DIR"])
    state = Path(s3_env["M10_STATE_DIR"])
    state.mkdir(parents=True)
    # A full state disk, for real: the fallback directory is a file (ENOTDIR), so no
    # copy can be kept there; nothing else is in the way.
    (state / "fallback-uploads").write_text("")
    down = {**s3_env, "M10_R2_ENDPOINT_URL": closed_endpoint()}
    proc = _run(down, "--start-date", "2026-07-30", "--until", "2026-07-31")
    assert proc.returncode == 1, proc.stderr
    assert "m10_stats_2026-07.csv: upload failed" in proc.stderr
    assert "Traceback" not in proc.stderr
    marker = json.loads((log / "m10_stats_2026-07.csv.processed").read_text())
    assert marker["upload_pending"] is True and marker["rows"] == 2
    again = _run(down, "--until", "2026-07-31")  # nothing new to export: still owed
    assert again.returncode == 1
    (state / "fallback-uploads").unlink()
    back = _run(s3_env, "--until", "2026-07-31")
    assert back.returncode == 0, back.stderr
    body = s3.get_object(Bucket=s3_env["M10_R2_BUCKET"], Key="m10/stats/m10_stats_2026-07.csv")[
        "Body"
    ].read()
    assert body == (log / "m10_stats_2026-07.csv").read_bytes()
    assert (
        json.loads((log / "m10_stats_2026-07.csv.processed").read_text())["upload_pending"] is False
    )
    post = _postflight(s3_env, date(2026, 8, 1))
    assert post.returncode == 0, post.stdout
