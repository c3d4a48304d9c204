"""`make demo`: the suite end to end on throwaway local services.

Starts PostgreSQL, Redis and moto's S3 server under a temp dir, migrates, then
runs every scene in devenv/demos/ (ordered by each module's ORDER):
each scene runs real console scripts and shows what happened.  Scenes may
contribute a CONFIG TOML fragment to the demo's config file.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from devenv.services import Stack, stack

BIN = Path(sys.executable).parent


@dataclass
class Demo:
    stack: Stack
    env: dict[str, str]
    config_path: Path

    def say(self, text: str) -> None:
        print(f"\n== {text}", flush=True)

    def run(self, script: str, *args: str, expect: int | None = 0,
            show: int = 12) -> subprocess.CompletedProcess[str]:
        print(f"$ {shlex.join([script, *args])}", flush=True)
        proc = subprocess.run([str(BIN / script), *args], env=self.env, capture_output=True,
                              text=True, timeout=600)
        out = (proc.stdout.strip().splitlines() or [])[-show:]
        for line in out:
            print("  " + (line if len(line) <= 400 else line[:396] + " ..."))
        print(f"  -> exit {proc.returncode}", flush=True)
        if expect is not None and proc.returncode != expect:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"demo: {script} exited {proc.returncode}, expected {expect}")
        return proc

    def sql(self, statement: str, params: Any = None) -> list[dict[str, Any]]:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.stack.postgres.dsn, autocommit=True,
                             row_factory=dict_row) as c:
            cur = c.execute(statement, params)
            return cur.fetchall() if cur.description else []


def scenes() -> list[ModuleType]:
    import devenv.demos as pkg

    mods = [importlib.import_module(f"{pkg.__name__}.{m.name}")
            for m in pkgutil.iter_modules(pkg.__path__)]
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 50), m.__name__))


def main() -> int:
    print("m10jobs demo: starting throwaway PostgreSQL, Redis and S3 (moto) on loopback ...")
    with stack(with_s3=True) as st:
        config_path = st.base / "m10jobs.toml"
        mods = scenes()
        config_path.write_text("\n".join(getattr(m, "CONFIG", "") for m in mods))
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("M10_")},
               **st.env(), "M10_CONFIG": str(config_path)}
        demo = Demo(st, env, config_path)
        print(f"  PostgreSQL {st.postgres.dsn}\n  Redis      {st.redis.url}\n"
              f"  S3         {st.s3.endpoint_url if st.s3 else '-'}\n  files      {st.base}")
        demo.say("migrate the schema (twice: the second run has nothing to do)")
        demo.run("m10", "db", "migrate")
        demo.run("m10", "db", "migrate")
        for mod in mods:
            mod.run(demo)
        demo.say("metrics written for node_exporter's textfile collector")
        for prom in sorted((st.base / "metrics").glob("*.prom")):
            print(f"  {prom.name}: {len(prom.read_text().splitlines())} lines")
        print("\ndemo finished: every service is being stopped and its files removed.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
