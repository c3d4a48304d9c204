"""`make demo`'s output (devenv/report.py) on real step results: one complete line
per step with its figures, exit code and meaning; errors whole; a closing table
of every step.  A handful of real runs instead of the whole demo keeps it cheap."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from devenv.demo import Steps
from devenv.report import Printer
from m10jobs.errors import exit_meaning

# A source query whose columns are all wrong: the job's error names every one of
# them, a line far longer than the ~300 characters the old demo cut it at.
LONG_NAMES = [f"column_with_a_deliberately_long_name_number_{i}_" + "x" * 12 for i in range(6)]
WRONG_COLUMNS = """
[cost]
source_query = '''SELECT {cols} WHERE %(period_start)s IS NOT NULL AND %(period_end)s IS NOT NULL'''
""".format(cols=", ".join(f"1 AS {n}" for n in LONG_NAMES))


def test_every_step_one_complete_line_errors_whole_and_a_closing_table(
    env: dict[str, str], conn: Any, tmp_path: Path
) -> None:
    text = io.StringIO()
    steps = Steps(env, Printer(text))
    steps.run("m10", "db", "migrate")
    steps.run("m10-maintenance")
    conn.execute("SELECT m10_recovery.acquire_lock('reclaim_gc', 'other-host:1:test', 60)")
    steps.run("m10", "run", "reclaim_gc", expect=75)
    steps.run("m10", "locks", "list")
    bad = tmp_path / "wrong-columns.toml"
    bad.write_text(WRONG_COLUMNS)
    steps.scene = "cost"
    steps.run("aos-cost-snapshot-daily", "--config", str(bad), expect=78)
    steps.out.finish()
    out = text.getvalue().splitlines()
    recorded = steps.out.steps
    assert [s.exit_code for s in recorded] == [0, 0, 75, 0, 78]

    for step in recorded:
        [line] = [ln for ln in out if ln.startswith(f"[{step.n}] {step.command}: ")]
        assert line.endswith(
            f"-> exit {step.exit_code} ({exit_meaning(step.exit_code)}), {step.duration_s:.2f} s"
        )
        assert step.outcome() in line
    maintenance, skipped, cost = recorded[1], recorded[2], recorded[4]
    assert (
        maintenance.outcome() == f"{len(maintenance.summary['tasks'])} tasks: "
        f"{len(maintenance.summary['tasks'])} ok"
    )
    assert "reclaimed 0" in maintenance.detail()[0]  # per task, its figures
    assert "other-host:1:test" in skipped.outcome()  # who holds the lease
    assert "LOCK" in out[out.index(next(ln for ln in out if ln.startswith("[4] "))) + 1]

    [task] = cost.summary["tasks"]
    error = task["error"]
    assert len(error) > 400 and all(n in error for n in LONG_NAMES)
    assert f"      error: {task['task']}: {error}" in out  # whole, on its own line

    table = out[out.index("== summary") + 1 :]
    assert table[0].split() == ["step", "scene", "command", "exit", "meaning", "outcome", "time"]
    for step, row in zip(recorded, table[1:-1], strict=True):
        assert row.split()[:2] == [str(step.n), step.scene]
        assert f"  {step.command}  " in row and f"  {step.exit_code}  " in row
        assert exit_meaning(step.exit_code) in row and row.endswith(" s")
    assert table[-1].startswith("5 steps, 5 as expected, 0 not; total time ")

    # --json: the same steps, one JSON object per line
    machine = io.StringIO()
    printer = Printer(machine, json_mode=True)
    for step in recorded:
        printer.step(step)
    printer.finish()
    objs = [json.loads(line) for line in machine.getvalue().splitlines()]
    assert [o["exit_code"] for o in objs[:-1]] == [0, 0, 75, 0, 78]
    assert objs[4]["errors"] == [f"{task['task']}: {error}"] and objs[-1]["steps"] == 5


def test_figures_read_as_words() -> None:
    from devenv.report import key_figures

    nested = {"policies": {"dead_letter_archive": {"archived": 1, "seconds": 0.2}, "x": {}}}
    assert key_figures(nested) == "dead letter archive: 1 archived"
    assert (
        key_figures({"reclaimed": 0, "outbox_processor": {"lease": "free", "healthy": True}})
        == "reclaimed 0; outbox processor: lease free, healthy yes"
    )
    assert key_figures({"published": 5, "routed": 3}) == "published 5, routed 3"


def test_the_status_scene_shows_red_then_green_after_its_fix(
    env: dict[str, str], conn: Any
) -> None:
    """devenv/demos/status.py's staged failure: the red line and its fix are printed, and
    the fix it names takes that red line away."""
    from devenv.demo import Demo
    from devenv.demos import status as scene

    text = io.StringIO()
    steps = Steps(env, Printer(text))
    steps.run("m10", "status", expect=None)
    before = steps.out.steps[-1]
    assert "lease-stuck" not in before.stdout
    conn.execute(scene.STUCK_LEASE)
    red = steps.run("m10", "status", expect=1)
    assert "RED lease-stuck" in "\n".join(red.detail())
    assert "m10 locks release m10:outbox_processor --force" in text.getvalue()
    steps.run("m10", "locks", "release", "m10:outbox_processor", "--force")
    after = steps.run("m10", "status", expect=None)
    assert "lease-stuck" not in after.stdout and after.exit_code == before.exit_code
    assert Demo  # the scene runs under make demo (ORDER 90, after every other scene)
