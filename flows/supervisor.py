"""Keep ``fusionrec run``'s child processes running: restart a failed one with exponential backoff.

A child that exits with a non-zero code (or is killed) is started again after ``backoff_s``,
doubled on each failure in a row up to ``max_backoff_s``, and reset once it has run for
``stable_s``; the other children keep serving meanwhile. A child that exits with 0 has finished
its job and is left alone, unless it is a service (``add(..., service=True)``: it runs until the
supervisor's owner stops it, so any exit is a failure; e.g. the trainer, which exits 0 on a SIGTERM
of its own). The embedded broker is supervised the same way: it comes back on
the same port, empty (memory storage), and ``on_broker_restart`` re-creates the topics; the
flows and the API ride the outage out and resume on their own (see README, "Recovery").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Child", "Supervisor"]

log = logging.getLogger(__name__)


@dataclass
class Child:
    """One supervised process: ``start()`` launches it; ``poll()`` of what it returns gives its exit code."""

    name: str
    start: Callable[[], object]
    proc: object | None = None
    restarts: int = 0
    backoff_s: float = 1.0
    started_at: float = 0.0
    restart_at: float | None = None
    after_restart: Callable[[], None] | None = None
    service: bool = False
    """Runs until stopped by the supervisor's owner: an exit with 0 is a failure too (restarted)."""
    history: list[tuple[float, int]] = field(default_factory=list)  # (time, exit code) of each failure

    def exit_code(self) -> int | None:
        poll = getattr(self.proc, "poll", None)
        return None if poll is None else poll()


class Supervisor:
    """Restart failed children with backoff.

    Parameters
    ----------
    initial_backoff_s, max_backoff_s : float
        First wait before a restart, and its cap (it doubles per failure in a row), seconds.
    stable_s : float
        A child that ran this long before failing restarts after ``initial_backoff_s`` again.
    notify : callable (str), optional
        Where restart messages go besides the log (the CLI echoes them).
    """

    def __init__(self, initial_backoff_s: float = 1.0, max_backoff_s: float = 30.0, stable_s: float = 60.0,
                 notify: Callable[[str], None] | None = None) -> None:
        self.initial_backoff_s, self.max_backoff_s, self.stable_s = initial_backoff_s, max_backoff_s, stable_s
        self.notify = notify
        self.children: list[Child] = []

    def add(self, name: str, start: Callable[[], object], after_restart: Callable[[], None] | None = None,
            service: bool = False) -> Child:
        """Start a child now and supervise it (``service``: restarted after any exit, 0 included)."""
        child = Child(name, start, backoff_s=self.initial_backoff_s, after_restart=after_restart, service=service)
        child.proc = start()
        child.started_at = time.monotonic()
        self.children.append(child)
        return child

    def tick(self) -> None:
        """Look at every child once: schedule restarts of failed ones, perform due restarts."""
        now = time.monotonic()
        for c in self.children:
            if c.restart_at is not None:
                if now >= c.restart_at:
                    self._restart(c)
                continue
            code = c.exit_code()
            if code is None or code == 0 and not c.service:
                continue
            if now - c.started_at >= self.stable_s:
                c.backoff_s = self.initial_backoff_s
            c.history.append((now, code))
            c.restart_at = now + c.backoff_s
            self._say(f"{c.name} exited with code {code}; restarting in {c.backoff_s:.0f} s "
                      f"(restart #{c.restarts + 1}; the rest keeps running)")
            c.backoff_s = min(c.backoff_s * 2, self.max_backoff_s)

    def _restart(self, c: Child) -> None:
        c.restart_at = None
        try:
            c.proc = c.start()
        except Exception as exc:  # e.g. the broker's port is not free yet: try again later
            c.restart_at = time.monotonic() + c.backoff_s
            self._say(f"{c.name} could not be started ({exc}); next try in {c.backoff_s:.0f} s")
            c.backoff_s = min(c.backoff_s * 2, self.max_backoff_s)
            return
        c.started_at = time.monotonic()
        c.restarts += 1
        if c.after_restart is not None:
            try:
                c.after_restart()
            except Exception as exc:
                self._say(f"{c.name} restarted, but its follow-up failed: {exc}")
        self._say(f"{c.name} restarted")

    def _say(self, msg: str) -> None:
        log.warning("%s", msg)
        if self.notify is not None:
            self.notify(msg)
