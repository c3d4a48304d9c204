"""The units' environment file, as a hand run as root loads it: parsed like systemd's
EnvironmentFile=, and refused (78, one line naming it) when it is anything but a small
regular UTF-8 file, since root reads it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from m10jobs.cli import service_identity


def test_key_values_load_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / "env"
    env.write_text("# comment\nexport M10_T_A='one'\nM10_T_B=\"two\"\n\nM10_T_C=x=y\n")
    monkeypatch.setenv("M10_T_B", "operator")
    for key in ("M10_T_A", "M10_T_C"):
        monkeypatch.delenv(key, raising=False)
    service_identity.load_env_file(str(env))
    assert (os.environ["M10_T_A"], os.environ["M10_T_B"], os.environ["M10_T_C"]) == (
        "one",
        "operator",
        "x=y",
    )


def test_a_missing_file_loads_nothing(tmp_path: Path) -> None:
    before = dict(os.environ)
    service_identity.load_env_file(str(tmp_path / "absent"))
    assert dict(os.environ) == before


def _symlink(path: Path) -> None:
    (path.parent / "real").write_text("M10_T_LINK=1\n")
    path.symlink_to(path.parent / "real")


HOSTILE: dict[str, tuple[Callable[[Path], None], str]] = {
    "fifo": (lambda p: os.mkfifo(p), "is a FIFO"),
    "directory": (lambda p: p.mkdir(), "is a directory"),
    "symlink": (_symlink, "is a symlink"),
    "non_utf8": (lambda p: p.write_bytes(b"M10_T=\xff\xfe\n"), "is not UTF-8"),
    "huge": (lambda p: p.write_bytes(b"#" * (2 << 20)), "limit"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_anything_but_a_small_regular_utf8_file_is_refused_with_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    path = tmp_path / "env"
    make, says = HOSTILE[case]
    make(path)
    done = threading.Event()
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            service_identity.load_env_file(str(path))
        except BaseException as exc:  # the SystemExit is the outcome
            outcome.append(exc)
        done.set()

    threading.Thread(target=load, daemon=True).start()
    assert done.wait(10), "reading the environment file hung"
    assert len(outcome) == 1 and isinstance(outcome[0], SystemExit), outcome
    assert outcome[0].code == 78
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"environment file {path}" in err and says in err, err
    assert "M10_T_LINK" not in os.environ
