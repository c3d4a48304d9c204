"""SIGTERM/SIGINT: stop at the next safe point, release the lease, end by the signal.

`systemctl stop` (or a timer's TimeoutStartSec) sends SIGTERM.  The handler only
sets STOP: a pass notices it at its next safe point (PassContext.check(), between
batches; long waits use STOP.wait), so a batch is never left half-done.  A pass
that has not reached one within STOP_GRACE_S (stuck in a query or a network call)
is interrupted there: Stopped, a KeyboardInterrupt, is raised in the main thread,
uncommitted work rolls back and the lease is released on the way out.  The
runner then ends the process by the same signal (systemd counts SIGTERM/SIGINT as
a clean stop, so no failure is recorded for an operator's own `systemctl stop`).

The lease heartbeat also interrupts the main thread (lost lease); interrupt()
marks that as its own, so it is not mistaken for a signal.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

STOP_GRACE_S = 1.0
STOP = threading.Event()
_internal = threading.Event()
_state: dict[str, Any] = {"signum": None, "on_stop": None, "interruptible": 0}


class Stopped(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM/SIGINT): the pass ends here."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def signum() -> int | None:
    """The signal that asked us to stop, or None."""
    return _state["signum"] if STOP.is_set() else None


def check() -> None:
    """Raise Stopped if a stop was asked for (call at safe points)."""
    if STOP.is_set():
        raise Stopped(_state["signum"])


def interrupt() -> None:
    """Interrupt the main thread with a plain KeyboardInterrupt (the lease heartbeat)."""
    _internal.set()
    _wake_main()


def _wake_main() -> None:
    """A real SIGINT to the main thread: unlike _thread.interrupt_main it also breaks a
    blocking system call (a socket read), whose EINTR then runs the handler."""
    if signal.getsignal(signal.SIGINT) is _handler:
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
    else:  # our handler is not installed (a library use): the default KeyboardInterrupt
        _thread.interrupt_main()


def _handler(signo: int, frame: Any) -> None:
    if _internal.is_set():
        _internal.clear()
        raise KeyboardInterrupt
    if STOP.is_set():  # the grace period ran out (or a second signal came): stop right here
        if _state["interruptible"]:
            raise Stopped(_state["signum"])
        return  # already on the way out (releasing, reporting): let that finish
    _state["signum"] = signo
    STOP.set()
    on_stop: Callable[[int], None] | None = _state["on_stop"]
    if on_stop is not None:
        on_stop(signo)
    timer = threading.Timer(STOP_GRACE_S, _wake_main)
    timer.daemon = True
    timer.start()


@contextmanager
def interruptible() -> Iterator[None]:
    """Where a late stop may interrupt the main thread: inside a pass, not its cleanup."""
    _state["interruptible"] += 1
    try:
        yield
    finally:
        _state["interruptible"] -= 1


@contextmanager
def handling(on_stop: Callable[[int], None] | None = None) -> Iterator[None]:
    """Install the handlers for the duration of a run (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _internal.clear()
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGTERM, signal.SIGINT)}
    _state["on_stop"] = on_stop
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _state["on_stop"] = None


def exit_code(signo: int) -> int:
    """The shell's convention for 'ended by signal N' (for metrics and the summary)."""
    return 128 + signo


def die_by(signo: int) -> None:
    """End the process by signo with its default action, after everything is flushed."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signo, signal.SIG_DFL)
    os.kill(os.getpid(), signo)
    signal.pthread_kill(threading.get_ident(), signo)  # pragma: no cover (already dead)
