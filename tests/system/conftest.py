"""The system tier: every test here boots real systemd hosts (see harness.py).

Marked `system`; `make test` runs it.  It skips, with the reason printed in the
summary (`-ra`), only where unshare/pivot_root are impossible; packages it needs
are installed with apt instead."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import harness

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.system)


@pytest.fixture(scope="session")
def system_ready() -> None:
    reason = harness.unavailable()
    if reason:
        print(f"\nSKIPPING the system tier: {reason}")
        pytest.skip(reason)
    for tag in harness.reap_stale():
        print(f"\nreaped the hosts of an earlier run that died before its teardown: {tag}")
    harness.install_packages()


@pytest.fixture(scope="session")
def wheelhouse(system_ready: None) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="m10sys-wheels-", dir="/var/tmp"))
    directory.chmod(0o755)
    try:
        yield harness.build_wheelhouse(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
