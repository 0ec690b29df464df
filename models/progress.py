"""Progress bars (tqdm) that suit a terminal and a log file alike: the one place every bar is made.

On a terminal (or in a notebook) a bar is tqdm's own, redrawn in place. Written to anything else, a
log file such as ``var/run/trainer.log`` or ``make run``'s redirected output, tqdm's ``\\r`` redraws
would pile up into one line of megabytes; there the bar is one plain line every ``LOG_INTERVAL_S``
seconds at most, plus its last state when it closes, so progress stays visible at a sane rate.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm
from tqdm.auto import tqdm as auto_tqdm
from tqdm.autonotebook import tqdm as notebook_or_std_tqdm

__all__ = ["LOG_INTERVAL_S", "progress_bar"]

LOG_INTERVAL_S = 30.0
"""Seconds between two lines of a bar written to a file that is not a terminal."""


def progress_bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar (same arguments as ``tqdm``) that writes lines, not redraws, when its file is no terminal.

    Parameters
    ----------
    iterable : iterable, optional
        Wrapped and iterated over, as with ``tqdm(iterable)``.
    **kwargs
        tqdm's keyword arguments (``total``, ``desc``, ``unit``, ``disable``, ``leave``, ``file``, ...).
        For a file that is no terminal, ``mininterval`` and ``maxinterval`` become ``LOG_INTERVAL_S``.

    Returns
    -------
    tqdm
        tqdm's bar (``tqdm.auto``'s: a widget in a notebook) on a terminal, else a line-per-interval bar.

    Examples
    --------
    >>> import io
    >>> log = io.StringIO()
    >>> for _ in progress_bar(range(3), desc="fit", file=log):
    ...     pass
    >>> [line.split("|")[0] for line in log.getvalue().splitlines()]
    ['fit:   0%', 'fit: 100%']
    """
    file = kwargs.get("file") or sys.stderr
    if notebook_or_std_tqdm is not tqdm or _is_terminal(file):  # a notebook's widget, or a terminal
        return auto_tqdm(iterable, **kwargs)
    kwargs.update(file=file, mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S)
    return _LogLinesBar(iterable, **kwargs)


def _is_terminal(file: Any) -> bool:
    """Whether ``file`` is an open terminal."""
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class _LogLinesBar(tqdm):
    """A tqdm bar that writes its state as one line at most every ``mininterval`` s, and its last state on close."""

    _last_line_t = -math.inf

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg is not None:  # close() clearing a bar that is not kept: a log keeps its lines
            return False
        now = time.monotonic()
        if now - self._last_line_t < self.mininterval:  # e.g. set_postfix_str's refresh between two lines
            return True
        self._last_line_t = now
        self.fp.write(f"{self}\n")
        self.fp.flush()
        return True

    def close(self) -> None:
        if not self.disable and hasattr(self, "fp"):
            with self._lock:
                self._last_line_t = -math.inf
                self.display()  # the last state, whatever the interval
            self.leave = False  # tqdm's close then clears (nothing to clear) instead of adding a newline
        super().close()
