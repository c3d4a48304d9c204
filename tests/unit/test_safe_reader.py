"""The one safe reader (m10jobs/edges/files.py), without services."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from m10jobs.edges import files
from m10jobs.errors import BadInput, ConfigError

KIND = files.Kind("test file", 100, "do the thing")


def test_reads_a_regular_file_and_parses_json(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    p.write_text('{"a": [1, {"b": "]]]\\" {{"}]}')
    assert files.read_json(p, KIND) == {"a": [1, {"b": ']]]" {{'}]}
    assert files.read_bytes(tmp_path / "absent", KIND, missing_ok=True) is None


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p.symlink_to(p.with_name("real")), "is a symlink"),
        (lambda p: os.mkfifo(p), "is a FIFO"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b"x" * 101), "over the 100 bytes limit"),
        (lambda p: p.write_bytes(b'"\xff"'), "is not UTF-8"),
        (lambda p: p.write_bytes(b"[" * 33 + b"]" * 33), "nests deeper than 32"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(b'{"a": '), "is not valid JSON"),
        (lambda p: None, "does not exist"),
    ],
)
def test_every_refusal_names_the_file_and_what_to_do(
    tmp_path: Path, make: object, says: str
) -> None:
    (tmp_path / "real").write_text("{}")
    p = tmp_path / "t.json"
    make(p)  # type: ignore[operator]
    with pytest.raises(BadInput) as caught:
        files.read_json(p, KIND)  # a FIFO returns at once: opened non-blocking
    assert str(caught.value).startswith(f"test file {p}: ")
    assert says in str(caught.value) and str(caught.value).endswith("; do the thing")


def test_config_kind_is_78_and_schema_errors_name_the_field(tmp_path: Path) -> None:
    p = tmp_path / "c"
    p.write_text("{}")
    with pytest.raises(ConfigError):
        files.read_text(tmp_path / "none", files.CONFIG)
    with pytest.raises(BadInput, match="field 'n' missing or not a int"):
        files.read_json(p, KIND, schema=files.json_object({"n": int}))


def test_json_depth_skips_strings() -> None:
    assert files.json_depth('["[[[[", {"k": "}}}\\"[["}]') == 2
