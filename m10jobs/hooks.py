"""Push monitoring: Healthchecks-compatible ping URLs per job (docs/hooks.md).

A run that takes a lease pings `<url>/start`; when it ends it pings `<url>` (exit 0,
or 75 after some task ran) or `<url>/fail` with its one-line error as the body.  A
run that did nothing because every lease was held elsewhere (75) pings nothing: the
host that holds the lease pings for it, so a check never goes green for a host that
merely lost the race.  A run that fails before any lease (config 78, database down 69)
pings /fail.  Dry runs ping nothing.

Each ping is a POST in a daemon thread, bounded by hooks.timeout_s: a dead or silent
endpoint never fails the job and never keeps it running longer than the timeout (the
end ping and a still-pending start ping share one deadline).  The URLs may carry a
token: every value of [hooks.ping_urls] is registered as a secret (masked in every
output) and no line names a URL.

The settings class is cheap (the config loader declares it); urllib is imported
only when a ping is sent, and the runner imports this module only when the config
file has a [hooks] table.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from m10jobs.settings import setting

if TYPE_CHECKING:
    import logging

EVERY_JOB = "*"
MAX_BODY = 10_000
"""Bytes of body sent (Healthchecks keeps 100 kB; an error line is far shorter)."""


def _urls(urls: dict[str, str]) -> str | None:
    from m10jobs.registry import jobs

    scripts = {j.script for j in jobs()}
    for name, url in urls.items():
        if name != EVERY_JOB and name not in scripts:
            return f'job script names ({name!r} is not one) or "{EVERY_JOB}" for every job'
        if not url.startswith(("http://", "https://")):
            return f"http:// or https:// URLs (the one for {name!r} is not)"
    return None


@dataclass(frozen=True)
class HooksSettings:
    """[hooks] (every job): Healthchecks-compatible ping URLs, pinged at the start
    (/start), on success and on failure (/fail, the one-line error as body)."""

    SECTION: ClassVar[str] = "hooks"

    ping_urls: dict[str, str] = setting(
        {},
        'job script -> ping URL; "*" for every job without its own, where {job} is '
        "replaced by the script name (Healthchecks slug URLs); masked in every output",
        check=_urls,
        secret=True,
        example={"*": "https://hc-ping.com/PING_KEY/{job}?create=1"},
    )
    timeout_s: float = setting(
        5.0, "a ping gives up after this long; the job never waits longer", min=0.1, max=30
    )

    def url(self, script: str) -> str | None:
        own = self.ping_urls.get(script)
        if own is not None:
            return own
        every = self.ping_urls.get(EVERY_JOB)
        return every.replace("{job}", script) if every else None


def endpoint(url: str, suffix: str) -> str:
    """url with /suffix inserted before its query (Healthchecks: <url>/start?create=1)."""
    base, q, query = url.partition("?")
    return f"{base.rstrip('/')}/{suffix}{q}{query}" if suffix else url


def _send(url: str, body: str, timeout: float, log: logging.Logger, what: str) -> None:
    import urllib.error
    import urllib.request

    from m10jobs import __version__

    request = urllib.request.Request(
        url,
        data=body.encode()[:MAX_BODY],
        method="POST",
        headers={"User-Agent": f"m10jobs/{__version__}", "Content-Type": "text/plain"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(1024)
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts are OSErrors
        from m10jobs.redact import redact

        reason = getattr(exc, "reason", None) or exc
        log.warning("ping hook (%s) failed: %s; the job goes on", what, redact(str(reason)))


class Pinger:
    """The pings of one run: start (once, at the first lease), then one end."""

    def __init__(self, url: str, timeout: float, log: logging.Logger) -> None:
        self.url, self.timeout, self.log = url, timeout, log
        self.threads: list[threading.Thread] = []
        self.started = False

    def _ping(self, suffix: str, body: str) -> None:
        t = threading.Thread(
            target=_send,
            args=(endpoint(self.url, suffix), body, self.timeout, self.log, suffix or "success"),
            name=f"ping-{suffix or 'success'}",
            daemon=True,  # a hung endpoint never keeps the process alive
        )
        t.start()
        self.threads.append(t)

    def start(self) -> None:
        if not self.started:
            self.started = True
            self._ping("start", "")

    def end(self, code: int, error: str | None, summary: str) -> None:
        """Ping the outcome and wait for every ping at most timeout_s from now."""
        if code == 75 and not self.started:
            pass  # every lease held elsewhere: that host pings
        elif code in (0, 75):
            self._ping("", summary)
        else:
            from m10jobs.redact import redact

            self._ping("fail", redact(f"exit {code}: {error or 'failed'}"))
        deadline = time.monotonic() + self.timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))


def pinger(settings: HooksSettings, script: str, log: logging.Logger) -> Pinger | None:
    url = settings.url(script)
    return Pinger(url, settings.timeout_s, log) if url else None


def summary_line(tasks: Iterator[tuple[str, str]]) -> str:
    """The success body: one `task: figures` line per task."""
    return "\n".join(f"{name}: {figures}" for name, figures in tasks)
