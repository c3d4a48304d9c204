"""Build a job's click command from its registry declaration.

Imports only click, the registry and the global settings (m10jobs.config, for
the flags): the runner (and with it psycopg) is imported when the command
actually runs, so `--help` costs no driver import.
"""

from __future__ import annotations

from typing import Any

import click

from m10jobs.cli import Command, version_option
from m10jobs.config import SETTINGS
from m10jobs.registry import Job, Task

COMMON_HELP = """
\b
Exit codes: 0 done or nothing to do, 1 something failed, 2 usage,
65 bad input data, 69 dependency unreachable, 75 lock held elsewhere
(skipped), 78 bad or missing configuration.
"""


def common_options() -> list[click.Parameter]:
    opts: list[click.Parameter] = [
        click.Option(
            ["--config", "config_file"],
            metavar="PATH",
            help="TOML config file (default: $M10_CONFIG, else "
            "/etc/m10jobs/m10jobs.toml if present).",
        ),
        click.Option(
            ["--dry-run"],
            is_flag=True,
            help="Take no lease, change nothing; say what would be done.",
        ),
        click.Option(
            ["--verbose", "-v"],
            is_flag=True,
            help="Debug logging, and tracebacks on unexpected errors.",
        ),
    ]
    for s in SETTINGS:
        if s.flag:
            opts.append(
                click.Option(
                    [s.option, s.key],
                    metavar="VALUE",
                    help=f"{s.help[0].upper()}{s.help[1:]} (env {s.env}).",
                )
            )
    return opts


def split_flags(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(core setting flags, remaining params) from a command's keyword arguments."""
    keys = {s.key for s in SETTINGS}
    flags = {k: kwargs.pop(k) for k in list(kwargs) if k in keys}
    return flags, kwargs


def job_command(job: Job, only: Task | None = None, name: str | None = None) -> click.Command:
    target = only or job.tasks[0]

    def callback(config_file: str | None, dry_run: bool, verbose: bool, **kwargs: Any) -> None:
        from m10jobs import runner
        from m10jobs.cli import service_identity

        service_identity.adopt()
        flags, params = split_flags(kwargs)
        code = runner.run(
            job,
            only=only,
            config_file=config_file,
            flags=flags,
            dry_run=dry_run,
            verbose=verbose,
            params=params,
        )
        from m10jobs import stopping

        signo = stopping.signum()
        if signo is not None:  # docs/contract.md "Exit codes": after releasing, end by the signal
            stopping.die_by(signo)
        click.get_current_context().exit(code)

    summary = only.summary if only else job.summary
    locks = ", ".join(job.lease_patterns if only is None else (only.lease_pattern,))
    example = job.example if only is None else f"m10 run {target.name} --dry-run"
    command = Command(
        name or job.script,
        callback=callback,
        params=[*common_options(), *job.options],
        help=f"{summary}\n\nLease(s): {locks}.  One pass, then exit.\n{COMMON_HELP}",
        epilog=f"\b\nExample:\n  {example}",
        short_help=summary,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )
    return version_option()(command)
