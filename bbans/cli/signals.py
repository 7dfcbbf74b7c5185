"""SIGTERM and SIGINT as exceptions, raised where the process is so that cleanup runs.

A handler's exception is lost when the signal lands in code that swallows exceptions: a weakref
callback inside importlib, say, while torch is being imported. So each handler also records the
signal, and `check` (which every progress update calls) raises it again: a command stops at its
next step even when the first raise went nowhere.
"""

from __future__ import annotations

import signal

from bbans.errors import Terminated

_pending: int | None = None


def _raise(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    # Raised, not exited: every staging folder and temporary archive is removed on the way out.
    raise Terminated()


def _handler(signum, frame) -> None:
    global _pending
    _pending = signum
    _raise(signum)


def install() -> None:
    """Handle SIGTERM, and SIGINT where Python's own handler has it (not where it is ignored,
    as for a command started in the background)."""
    signal.signal(signal.SIGTERM, _handler)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _handler)


def check() -> None:
    """Raise the signal received, if one was and its first raise did not stop the command."""
    if _pending is not None:
        _raise(_pending)
