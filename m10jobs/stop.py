"""SIGTERM/SIGINT during a pass that waits (the outbox processor's linger): stop at
the next safe point, let the runner release the lease, then end by the signal
(DESIGN.md A2).

Minimal on purpose: `handling()` installs the handlers only around the code that
can stop cleanly, which polls `requested` (or waits on it); the runner calls
`reraise()` once everything is released.  Outside `handling()` the signals keep
their default behaviour.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

requested = threading.Event()
_received: list[int] = []


def _handler(signum: int, _frame: FrameType | None) -> None:
    _received.append(signum)
    requested.set()


@contextlib.contextmanager
def handling() -> Iterator[threading.Event]:
    """SIGTERM/SIGINT set `requested` instead of ending the process, inside this block."""
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def reraise() -> None:
    """End by the signal that asked us to stop, if one did (after the lease is released)."""
    if _received:
        signum = _received[0]
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
