"""`make demo`: the suite end to end on throwaway local services.

Starts PostgreSQL, Redis and moto's S3 server under a temp dir, migrates, then
runs every scene in devenv/demos/ (ordered by each module's ORDER): each scene
runs real console scripts and shows what happened.  Scenes may contribute a
CONFIG TOML fragment to the demo's config file.  Output: devenv/report.py
(text for a person; `--json` for machines).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from devenv.report import Printer, Step
from devenv.services import Stack, stack

BIN = Path(sys.executable).parent


class UnexpectedExit(Exception):
    """A step exited with another code than the scene expects: the demo stops."""


@dataclass
class Steps:
    """Runs console scripts as separate processes (as systemd would) and records them."""

    env: dict[str, str]
    out: Printer
    scene: str = "setup"

    def run(self, script: str, *args: str, expect: int | None = 0) -> Step:
        t0 = time.monotonic()
        proc = subprocess.run(
            [str(BIN / script), *args], env=self.env, capture_output=True, text=True, timeout=600
        )
        step = Step(
            len(self.out.steps) + 1,
            self.scene,
            [script, *args],
            proc.returncode,
            expect,
            time.monotonic() - t0,
            proc.stdout,
            proc.stderr,
        )
        self.out.step(step)
        if not step.as_expected:
            raise UnexpectedExit(f"{script} exited {proc.returncode}, expected {expect}")
        return step


@dataclass
class Demo:
    """What a scene gets: the services, the environment, and the step runner."""

    stack: Stack
    env: dict[str, str]
    config_path: Path
    steps: Steps

    def say(self, text: str) -> None:
        self.steps.out.heading(text)

    def show(self, text: str) -> None:
        self.steps.out.note(text)

    def run(self, script: str, *args: str, expect: int | None = 0) -> Step:
        return self.steps.run(script, *args, expect=expect)

    def sql(self, statement: str, params: Any = None) -> list[dict[str, Any]]:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.stack.postgres.dsn, autocommit=True, row_factory=dict_row) as c:
            cur = c.execute(statement, params)
            return cur.fetchall() if cur.description else []


def scenes() -> list[ModuleType]:
    import devenv.demos as pkg

    mods = [
        importlib.import_module(f"{pkg.__name__}.{m.name}")
        for m in pkgutil.iter_modules(pkg.__path__)
    ]
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 50), m.__name__))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per step, scene and note (for machines)",
    )
    opts = parser.parse_args(argv)
    out = Printer(sys.stdout, json_mode=opts.json)
    out.note("m10jobs demo: starting throwaway PostgreSQL, Redis and S3 (moto) on loopback ...")
    with stack(with_s3=True) as st:
        config_path = st.base / "m10jobs.toml"
        mods = scenes()
        config_path.write_text("\n".join(getattr(m, "CONFIG", "") for m in mods))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("M10_")},
            **st.env(),
            "M10_CONFIG": str(config_path),
        }
        demo = Demo(st, env, config_path, Steps(env, out))
        demo.show(
            f"PostgreSQL {st.postgres.dsn}\nRedis      {st.redis.url}\n"
            f"S3         {st.s3.endpoint_url if st.s3 else '-'}\n"
            f"files      {st.base} (below: $DEMO)"
        )
        out.shorten[str(st.base)] = "$DEMO"
        code = 0
        try:
            demo.say("migrate the schema (twice: the second run has nothing to do)")
            demo.run("m10", "db", "migrate")
            demo.run("m10", "db", "migrate")
            for mod in mods:
                demo.steps.scene = mod.__name__.rsplit(".", 1)[-1]
                mod.run(demo)
            demo.say("metrics written for node_exporter's textfile collector")
            demo.show(
                "\n".join(
                    f"{prom.name}: {len(prom.read_text().splitlines())} lines"
                    for prom in sorted((st.base / "metrics").glob("*.prom"))
                )
            )
        except UnexpectedExit as exc:
            demo.show(f"demo stopped: {exc}")
            code = 1
        out.finish()
        out.note("every service is being stopped and its files removed.")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
