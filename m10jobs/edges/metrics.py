"""Batch-job metrics in node_exporter's textfile format ($M10_METRICS_DIR/m10_<job>.prom).

Written atomically once per run, as node_exporter's textfile collector expects.
A failed run keeps the previous last-success timestamp, so an alert on
"no success for N minutes" keeps firing while the job keeps failing.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from m10jobs.edges.files import atomic_write
from m10jobs.redact import redact

_NAME = re.compile(r"[^a-zA-Z0-9_]")


@dataclass(frozen=True)
class Gauge:
    name: str
    value: float
    help: str = ""
    labels: dict[str, str] = field(default_factory=dict)


def metric_name(*parts: str) -> str:
    return _NAME.sub("_", "_".join(parts))


def _labels(labels: dict[str, str]) -> str:
    """Label values redacted (a lock or task name may carry a configured value)."""
    body = ",".join(
        f'{k}="'
        + redact(str(v)).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        + '"'
        for k, v in sorted(labels.items())
    )
    return "{" + body + "}"


def _number(value: float) -> str:
    """Integers without a fraction (counts, exit codes); full precision otherwise."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def render(job: str, gauges: Iterable[Gauge]) -> str:
    lines: list[str] = []
    seen: set[str] = set()
    for g in sorted(gauges, key=lambda g: g.name):
        if g.name not in seen:
            seen.add(g.name)
            lines += [f"# HELP {g.name} {g.help or g.name}", f"# TYPE {g.name} gauge"]
        lines.append(f"{g.name}{_labels({'job': job, **g.labels})} {_number(g.value)}")
    return "\n".join(lines) + "\n"


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$")
# One sample line of the text exposition format (what `m10 flows --check` accepts).
SAMPLE_LINE = re.compile(
    r"^[a-zA-Z_:][a-zA-Z0-9_:]*"
    r'(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})?'
    r" (-?[0-9.eE+-]+|NaN|[+-]Inf)( -?[0-9]+)?$"
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_ESCAPED = re.compile(r"\\(.)")
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n"}


def _unescape(value: str) -> str:
    """A label value as written: one left-to-right pass, so `C:\\\\new` (an escaped
    backslash, then `n`) stays `C:\\new`; unknown escapes are kept, as
    prometheus_client's parser does."""
    return _ESCAPED.sub(lambda m: _UNESCAPE.get(m.group(1), m.group(0)), value)


def parse(text: str) -> list[Gauge]:
    """Samples of a textfile this module wrote, with their HELP text."""
    gauges = []
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.M))
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            labels = {k: _unescape(v) for k, v in _LABEL.findall(m.group(2))}
            labels.pop("job", None)
            gauges.append(Gauge(m.group(1), float(m.group(3)), helps.get(m.group(1), ""), labels))
    return gauges


def write_gauges(path: Path, job: str, gauges: Iterable[Gauge], *, merge: bool = False) -> None:
    """Write gauges atomically; with merge, keep other label sets already in the file
    (the caller holds files.file_lock(path) around the read-modify-write)."""
    new = list(gauges)
    old = _read(path) if merge else None
    if old is not None:
        keys = {(g.name, tuple(sorted(g.labels.items()))) for g in new}
        new = [g for g in parse(old) if (g.name, tuple(sorted(g.labels.items()))) not in keys] + new
    atomic_write(path, render(job, new))


def _read(path: Path) -> str | None:
    """The previous textfile, or None when absent or not something we wrote."""
    from m10jobs.edges import files
    from m10jobs.errors import M10Error

    try:
        return files.read_text(path, files.METRICS, missing_ok=True)
    except M10Error:
        return None


def _previous(path: Path, name: str) -> float | None:
    text = _read(path)
    if text is None:
        return None
    m = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def metrics_path(metrics_dir: Path | str, job: str) -> Path:
    """$M10_METRICS_DIR/m10_<job>.prom, the job's script name without its own `m10-`
    (m10-canary -> m10_canary.prom; aos-cost-snapshot-daily ->
    m10_aos_cost_snapshot_daily.prom)."""
    return Path(metrics_dir) / f"m10_{metric_name(job.removeprefix('m10-'))}.prom"


def _adopt_legacy(path: Path, job: str) -> None:
    """Releases before this name wrote m10_m10_<job>.prom: the first run after an upgrade
    takes that file over (its last-success and last-skipped times carry on) or, when the
    new one is already there, removes it, so no stale file is left for node_exporter."""
    legacy = path.with_name(f"m10_{metric_name(job)}.prom")
    if legacy == path or not legacy.exists():
        return
    with contextlib.suppress(FileNotFoundError):  # another run on this host did it first
        if path.exists():
            legacy.unlink()
        else:
            os.replace(legacy, path)


def previous_success(path: Path) -> float | None:
    return _previous(path, "m10_job_last_success_timestamp_seconds")


def write_job_metrics(
    metrics_dir: Path,
    job: str,
    *,
    exit_code: int,
    started: float,
    duration: float,
    succeeded: bool,
    gauges: Iterable[Gauge] = (),
) -> Path:
    """Last-run gauges plus the pass's own.  "Last success" moves only on exit 0, so
    on several hosts the runs that were skipped (75) cannot keep it fresh while the
    leader is wedged; they move "last skipped" instead and keep the pass gauges of the
    last run that looked at the state (a degraded gauge stays set until fixed)."""
    path = metrics_path(metrics_dir, job)
    _adopt_legacy(path, job)
    finished = started + duration
    skipped = exit_code == 75
    last_success = finished if succeeded else previous_success(path)
    last_skipped = (
        finished if skipped else _previous(path, "m10_job_last_skipped_timestamp_seconds")
    )
    base = [
        Gauge("m10_job_last_run_timestamp_seconds", finished, "Unix time the last run finished."),
        Gauge("m10_job_duration_seconds", duration, "Wall time of the last run."),
        Gauge("m10_job_last_exit_code", exit_code, "Exit code of the last run (75 = skipped)."),
    ]
    if last_success is not None:
        base.append(
            Gauge(
                "m10_job_last_success_timestamp_seconds",
                last_success,
                "Unix time of the last run that exited 0.",
            )
        )
    if last_skipped is not None:
        base.append(
            Gauge(
                "m10_job_last_skipped_timestamp_seconds",
                last_skipped,
                "Unix time of the last run skipped (exit 75: lock held elsewhere).",
            )
        )
    if skipped:
        from m10jobs.edges.files import file_lock

        with file_lock(path):
            write_gauges(path, job, [*base, *gauges], merge=True)
    else:
        write_gauges(path, job, [*base, *gauges])
    return path
