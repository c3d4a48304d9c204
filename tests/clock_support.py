"""Run a job with a skewed host clock: libfaketime preloaded into that process only."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

FAKETIME_LIB = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), Path("-"))
SKEWS = {"+1h": 3600, "-1h": -3600, "+1d": 86400, "-1d": -86400}

needs_faketime = pytest.mark.skipif(
    not FAKETIME_LIB.exists(), reason="libfaketime missing: apt-get install faketime"
)


def skewed(env: dict[str, str], offset: str) -> dict[str, str]:
    """env with the host clock moved by offset for the process (and its children) only;
    checked to take effect, so a test can never pass on an unskewed clock."""
    out = {
        **env,
        "LD_PRELOAD": str(FAKETIME_LIB),
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # timeouts and heartbeats keep real time
        "FAKETIME_NO_CACHE": "1",
    }
    seen = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env=out,
        capture_output=True,
        text=True,
        check=True,
    )
    assert abs(float(seen.stdout) - time.time() - SKEWS[offset]) < 60, seen
    return out
