"""`make bench`: every benchmarks/bench_*.py against one throwaway stack.

PostgreSQL runs with fsync and synchronous_commit on (as in production).
Each module's run(bench) prints its figures with a baseline measured in the
same run, so ratios stay meaningful on whatever machine runs them.
"""

from __future__ import annotations

import importlib
import itertools
import os
import pkgutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg

from devenv.services import Stack, stack
from m10jobs.edges.migrate import migrate

_n = itertools.count()


@dataclass
class Bench:
    stack: Stack
    bin: Path = Path(sys.executable).parent

    def fresh_db(self) -> str:
        """A new migrated database; its DSN."""
        name = f"bench{next(_n)}"
        with psycopg.connect(self.stack.postgres.dsn, autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        dsn = self.stack.postgres.dsn_for(name)
        from psycopg.rows import dict_row

        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
            migrate(c)
        return dsn

    @staticmethod
    def report(
        name: str,
        value: float,
        unit: str,
        *,
        baseline: float | None = None,
        baseline_name: str = "baseline",
        goal: str = "",
    ) -> None:
        line = f"  {name:48} {value:12,.1f} {unit}"
        if baseline:
            line += f"   ({value / baseline:.2f}x {baseline_name} {baseline:,.1f} {unit})"
        if goal:
            line += f"   goal: {goal}"
        print(line, flush=True)


def compile_package() -> None:
    """Bytecode for m10jobs, as `pip install .` (make install) leaves it.  With an editable
    install and PYTHONDONTWRITEBYTECODE set (as on CI), every process a bench starts would
    compile the sources again: +0.1-0.15 s of start-up in each of retention's, the outbox
    hand-over's and the lock-busy figures, none of which an installed host pays."""
    import m10jobs

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", m10jobs.__path__[0]],
        env=env,
        check=True,
        capture_output=True,
    )


def main(argv: list[str]) -> int:
    import benchmarks

    compile_package()
    names = [
        m.name
        for m in pkgutil.iter_modules(benchmarks.__path__)
        if m.name.startswith("bench_") and (not argv or m.name in argv)
    ]
    with stack(fsync=True, with_s3=True) as st:
        bench = Bench(st)
        for name in sorted(names):
            print(f"\n[{name}]", flush=True)
            importlib.import_module(f"benchmarks.{name}").run(bench)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
