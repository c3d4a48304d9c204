"""What `make demo` prints: one line per step, errors whole, a closing table.

A step is one console-script run.  Its line names the command, what happened
(the key figures of the job's JSON summary, or the first line an admin
command printed), the exit code with its meaning and the time it took.  The
job's own error messages follow on their own lines, never cut: showing them is
the point of the steps that are meant to fail.  `--json` prints the same facts
as one JSON object per line for machines.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from m10jobs.errors import exit_meaning


@dataclass
class Step:
    """One finished command of the demo."""

    n: int
    scene: str
    argv: list[str]
    exit_code: int
    expected: int | None
    duration_s: float
    stdout: str
    stderr: str

    @property
    def as_expected(self) -> bool:
        return self.expected is None or self.exit_code == self.expected

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    @property
    def summary(self) -> dict[str, Any] | None:
        """The job's one-line JSON summary (admin commands print text instead)."""
        lines = self.stdout.strip().splitlines()
        try:
            data = json.loads(lines[-1]) if lines else None
        except ValueError:
            return None
        return data if isinstance(data, dict) and "tasks" in data else None

    def errors(self) -> list[str]:
        """Every error the run reported, whole: its failed tasks' errors, else (a
        configuration or usage error, before any task ran) the error lines it logged."""
        tasks = (self.summary or {}).get("tasks", [])
        found = [
            f"{t.get('task')}: {t['error']}"
            for t in tasks
            if t.get("status") == "failed" and t.get("error")
        ]
        if found or self.exit_code == 0 or (tasks and self.exit_code == 75):
            return found
        logged = []
        for line in self.stderr.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and str(rec.get("level")).lower() in ("error", "critical"):
                logged.append(str(rec.get("message", "")))
        if logged:
            return logged
        text = [ln for ln in self.stderr.splitlines() if ln.strip()]
        return text[-1:]

    def outcome(self) -> str:
        """Key figures of what happened, on one line."""
        summary = self.summary
        if summary is None:
            out = [ln for ln in self.stdout.splitlines() if ln.strip()]
            if len(out) == 1:
                return out[0].strip()
            return f"{len(out)} lines of output" if out else "no output"
        tasks = summary.get("tasks", [])
        if len(tasks) == 1:  # its name is the script's or the `m10 run` argument
            return task_outcome(tasks[0], name=False)
        counts: dict[str, int] = {}
        for t in tasks:
            counts[t.get("status", "?")] = counts.get(t.get("status", "?"), 0) + 1
        return f"{len(tasks)} tasks: " + ", ".join(f"{n} {s}" for s, n in counts.items())

    def detail(self) -> list[str]:
        """The lines under the step line: per task of a multi-task job its figures;
        an admin command's table as printed; then the errors, whole."""
        summary = self.summary
        lines: list[str] = []
        if summary is not None:
            tasks = summary.get("tasks", [])
            if len(tasks) > 1:
                lines += [task_outcome(t) for t in tasks]
        else:
            out = [ln.rstrip() for ln in self.stdout.splitlines() if ln.strip()]
            if len(out) > 1:
                lines += out
        lines += [f"error: {e}" for e in self.errors()]
        return lines


def task_outcome(task: dict[str, Any], *, name: bool = True) -> str:
    """`dl_route: routed 1`; a task not "ok" says its status; a skipped one also why
    (who holds the lease)."""
    figures = key_figures(task.get("summary") or {})
    if task.get("status") == "skipped" and task.get("error"):
        figures = ", ".join(f for f in (figures, str(task["error"])) if f)
    status = task.get("status", "?")
    head = " ".join(
        ([str(task.get("task", "?"))] if name else []) + ([status] if status != "ok" else [])
    )
    if not head:
        return figures or "done"
    return f"{head}: {figures}" if figures else head


def key_figures(summary: dict[str, Any], *, nested: bool = False) -> str:
    """`{"published": 5, "routed": 3}` -> "published 5, routed 3".

    Nested tables read as words: a table of named tables (per policy, per stream) gives
    each name its own group, `{"policies": {"dead_letter_archive": {"archived": 1}}}` ->
    "dead letter archive: 1 archived"; inside a group a count comes before its noun and
    only what is not zero or empty shows, without timings (there the zeros are noise).
    Groups are separated by "; ".  Lists show their items when short, else their length."""
    parts: list[str] = []
    for key, value in summary.items():
        name = key.replace("_", " ")
        if nested and (not value or key.endswith(("seconds", "_s"))):
            continue
        if isinstance(value, dict):
            named = value and all(isinstance(v, dict) for v in value.values())
            for label, inner in value.items() if named else [(key, value)]:
                figures = key_figures(inner, nested=True)
                if figures:
                    parts.append(f"{label.replace('_', ' ')}: {figures}")
        elif isinstance(value, list):
            scalars = all(isinstance(v, str | int | float) for v in value)
            if not value:
                parts.append(f"{name} none")
            elif scalars and len(value) <= 4:
                parts.append(f"{name} {', '.join(str(v) for v in value)}")
            else:
                parts.append(f"{len(value)} {name}")
        elif isinstance(value, bool):
            parts.append(f"{name} {'yes' if value else 'no'}")
        elif nested and isinstance(value, int | float):
            parts.append(f"{value} {name}")
        elif value is not None:
            parts.append(f"{name} {value}")
    sep = "; " if any(": " in p for p in parts) else ", "
    return sep.join(parts)


def step_line(step: Step) -> str:
    """`[19] m10-outbox-processor: published 5, ... -> exit 0 (pass done, ...), 1.72 s`."""
    flag = "" if step.as_expected else f"  UNEXPECTED: wanted exit {step.expected}"
    return (
        f"[{step.n}] {step.command}: {step.outcome()} -> exit {step.exit_code} "
        f"({exit_meaning(step.exit_code)}), {step.duration_s:.2f} s{flag}"
    )


def closing_table(steps: Sequence[Step], total_s: float) -> list[str]:
    rows = [("step", "scene", "command", "exit", "meaning", "outcome", "time")]
    rows += [
        (
            str(s.n),
            s.scene,
            s.command,
            str(s.exit_code),
            exit_meaning(s.exit_code),
            "ok" if s.as_expected else f"UNEXPECTED (wanted {s.expected})",
            f"{s.duration_s:.2f} s",
        )
        for s in steps
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    bad = sum(not s.as_expected for s in steps)
    lines.append(
        f"{len(steps)} steps, {len(steps) - bad} as expected, {bad} not; total time {total_s:.1f} s"
    )
    return lines


@dataclass
class Printer:
    """Text for a person (default) or one JSON object per line (`--json`)."""

    stream: TextIO
    json_mode: bool = False
    shorten: dict[str, str] = field(default_factory=dict)  # long path -> its name, in text
    steps: list[Step] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def _emit(self, obj: dict[str, Any]) -> None:
        self.stream.write(json.dumps(obj, default=str) + "\n")
        self.stream.flush()

    def _text(self, lines: Iterable[str]) -> None:
        for line in lines:
            for long, short in self.shorten.items():
                line = line.replace(long, short)
            self.stream.write(line + "\n")
        self.stream.flush()

    def heading(self, text: str) -> None:
        if self.json_mode:
            self._emit({"scene": text})
        else:
            self._text(["", f"== {text}"])

    def note(self, text: str) -> None:
        """A fact a scene shows beside its steps (a report, a stream, a file)."""
        if self.json_mode:
            self._emit({"note": text})
        else:
            self._text(f"   {line}" for line in text.splitlines())

    def step(self, step: Step) -> None:
        self.steps.append(step)
        if self.json_mode:
            self._emit(
                {
                    "step": step.n,
                    "scene": step.scene,
                    "argv": step.argv,
                    "exit_code": step.exit_code,
                    "meaning": exit_meaning(step.exit_code),
                    "expected": step.expected,
                    "as_expected": step.as_expected,
                    "duration_s": round(step.duration_s, 3),
                    "summary": step.summary,
                    "outcome": step.outcome(),
                    "errors": step.errors(),
                }
            )
        else:
            self._text([step_line(step), *(f"      {d}" for d in step.detail())])

    def finish(self) -> None:
        total = time.monotonic() - self.started
        if self.json_mode:
            self._emit(
                {
                    "steps": len(self.steps),
                    "unexpected": [s.n for s in self.steps if not s.as_expected],
                    "total_s": round(total, 3),
                }
            )
        else:
            self._text(["", "== summary", *closing_table(self.steps, total)])
