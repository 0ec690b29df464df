"""Ctrl-C, SIGTERM and SIGHUP as a stop request that cannot be lost.

Python turns a Ctrl-C into a KeyboardInterrupt raised wherever the main thread happens to be. Some places
drop it: an at-fork hook run while a child process starts (``logging``'s lock release: "Exception ignored
in ..."), a finaliser, or a C extension that swallows it (confluent-kafka's ``flush`` then fails with a
``SystemError``). ``fusionrec run`` then kept the whole platform running after a Ctrl-C. So the handler
here also marks the stop (``STOP_REQUESTED``), and the long-running commands check the mark at each step
(``check_stop``) and start their children inside ``deferred_interrupts``. Once a stop is asked for, the
"Exception ignored" tracebacks of finalisers that the interrupt left half-built go to the debug log.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_REQUESTED = threading.Event()
"""Set by the first stop signal the process got while ``interrupt`` was its handler; never cleared."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

log = logging.getLogger(__name__)

_deferred = False
"""True while a child process starts (``deferred_interrupts``): the handler only marks the stop."""


def interrupt(signum: int, frame: object) -> None:
    """Signal handler: mark the stop, and raise KeyboardInterrupt unless a child is being started.

    Raises:
        KeyboardInterrupt: outside ``deferred_interrupts``.
    """
    STOP_REQUESTED.set()
    sys.unraisablehook = _after_stop_unraisable
    if not _deferred:
        raise KeyboardInterrupt


def handle_stop_signals(signals: tuple[signal.Signals, ...]) -> dict[signal.Signals, object]:
    """Make ``interrupt`` the handler of each of ``signals`` that the process does not ignore, and return
    the handlers it replaced (to restore them). A signal inherited as ignored stays ignored, as Python
    leaves it: a command started in the background by a shell without job control, or SIGHUP under nohup."""
    replaced: dict[signal.Signals, object] = {}
    for sig in signals:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            replaced[sig] = signal.signal(sig, interrupt)
    return replaced


def check_stop() -> None:
    """Raise KeyboardInterrupt when a stop was asked for (its exception may have been lost on the way).

    Raises:
        KeyboardInterrupt: ``STOP_REQUESTED`` is set.
    """
    if STOP_REQUESTED.is_set():
        raise KeyboardInterrupt


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Start a child process, or import C extensions, inside this: a stop signal meanwhile is raised just
    after the block.

    Python runs its at-fork hooks in the parent after ``fork``; a KeyboardInterrupt raised inside one is
    printed as "Exception ignored" with a traceback and dropped. Register the child for stopping inside the
    block too, so a stop never leaves it behind. A KeyboardInterrupt inside a C extension's module
    initialisation is printed there and turned into an ImportError (numba's ``_dispatcher``).

    Raises:
        KeyboardInterrupt: a stop was asked for before or during the block.
    """
    global _deferred
    _deferred = True
    try:
        yield
    finally:
        _deferred = False
    check_stop()


def _after_stop_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """After a stop signal, errors in finalisers are the interrupted work's debris (e.g. llvmlite's
    ``ObjectRef.__del__`` of an object whose constructor the KeyboardInterrupt cut short): logged at debug
    level instead of Python's "Exception ignored in ..." traceback on stderr."""
    log.debug("after the stop signal, ignored in %r: %r", unraisable.object, unraisable.exc_value)
