"""Lines that point operators at the docs name a path that exists where they run."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from m10jobs.docpaths import DOC_SUBDIR, doc_path
from m10jobs.health import Problem

ROOT = Path(__file__).resolve().parents[2]


def test_an_installed_host_gets_the_installed_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = tmp_path.joinpath(*DOC_SUBDIR, "runbook.md")
    installed.parent.mkdir(parents=True)
    installed.write_text("# Runbook\n")
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert doc_path("runbook.md") == str(installed)
    assert Problem("outbox_backlog", "m", "f").runbook == f"{installed}#outbox_backlog"


def test_a_checkout_gets_its_own_docs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "prefix", str(tmp_path))  # no installed docs there
    assert doc_path("runbook.md") == str(ROOT / "docs" / "runbook.md")
    assert Path(doc_path("runbook.md")).is_file()


def test_the_makefile_installs_the_docs_where_doc_path_looks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    docdir = re.search(r"^DOCDIR\s*:?=\s*(\S+)", makefile, re.MULTILINE)
    assert docdir is not None
    assert docdir.group(1) == "$(PREFIX)/" + "/".join(DOC_SUBDIR)
    # PREFIX is the venv the scripts run from, i.e. their sys.prefix
    assert re.search(r"^\s*\$\(INSTALL_PYTHON\) -m venv --clear \$\(STAGE\)", makefile, re.M)
    assert re.search(r"install -m 0644 [^\n]*docs/\*\.md \$\(DESTDIR\)\$\(DOCDIR\)/", makefile)
