"""Ctrl-C and a scheduler's stop take one path. SIGINT (a terminal), SIGTERM (SLURM's pre-emption,
`scancel`, `scontrol requeue`, each followed by SIGKILL after the grace time) raise KeyboardInterrupt where
the cell is, and runners/cell.py says in one line what the stores kept: a requeued task resumes there.

A KeyboardInterrupt can be lost: Python runs a signal's handler between bytecodes, and one that lands
while a finalizer runs (a `__del__` or weakref callback the garbage collector calls mid-training) has its
exception printed as "Exception ignored in ..." and dropped. So the handler also remembers the signal,
and `raise_if_stopped` raises it again at the points that must not pass it: each optimizer step, each
stage, and before a cell is stored as done; and Python's report of the swallowed one (a traceback on
stderr, beside the one line the user is owed) is left out."""

import signal
import sys
import threading
from contextlib import contextmanager

STOPS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the signals received inside `stoppable`, in order


class Stopped(KeyboardInterrupt):
    """A stop signal a finalizer swallowed, raised again."""


def _handler(signum, frame):
    _received.append(signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _quiet_about_swallowed_stops(previous):
    """sys.unraisablehook, less the KeyboardInterrupt of a remembered stop that a finalizer swallowed."""
    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _received:
            return  # remembered: raised again at the next step
        previous(unraisable)
    return hook


def received() -> str | None:
    """The name of the first stop signal received, or None."""
    return signal.Signals(_received[0]).name if _received else None


def raise_if_stopped() -> None:
    if _received:
        raise Stopped(received())


@contextmanager
def stoppable():
    """SIGINT and SIGTERM raise KeyboardInterrupt inside the block (and are remembered there); the handlers
    before it come back after it (submitit's, which ignores SIGTERM so a job is not marked failed). Only
    the main thread can take signals: elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before, unraisable = {signum: signal.getsignal(signum) for signum in STOPS}, sys.unraisablehook
    _received.clear()
    for signum in STOPS:
        signal.signal(signum, _handler)
    sys.unraisablehook = _quiet_about_swallowed_stops(unraisable)
    try:
        yield
    finally:
        _received.clear()
        sys.unraisablehook = unraisable
        for signum, handler in before.items():
            signal.signal(signum, handler)
