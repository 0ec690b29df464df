"""The lock of a ``fusionrec run`` directory: one platform at a time per run directory.

``run`` deletes the previous run's state, rotates its logs and moves ``models/LATEST`` in its run
directory, so a second ``run`` on the same directory (other ports, same checkout) would wipe the
first one's state under its live processes. It first takes an exclusive ``flock`` on
``<run dir>/.lock`` and keeps it until it has stopped its children. The kernel drops the lock with
the process, so a crashed or killed run never leaves a stale lock; the file only keeps the holder's
PID for the message of the run that is refused.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["LOCK_NAME", "RunDirBusy", "RunDirLock", "lock_run_dir"]

LOCK_NAME = ".lock"
"""The lock file's name in the run directory (not a ``*.log``: ``run``'s log rotation leaves it alone)."""


class RunDirBusy(RuntimeError):
    """Another live process holds the run directory's lock; the message names its PID and what to do."""

    def __init__(self, var: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(
            f"another fusionrec run ({who}) is using the run directory {var}; stop it first, or start a second "
            "platform in another run directory: --var DIR or FUSIONREC_RUN__VAR_DIR=DIR ([run] var_dir), with "
            "other ports (--port / FUSIONREC_KAFKA__BROKERS, --api-port / FUSIONREC_API__PORT)")
        self.var, self.pid = var, pid


class RunDirLock:
    """A held run-directory lock: an open descriptor (not inherited by children) with ``flock(LOCK_EX)``."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    def release(self) -> None:
        """Unlock and close (idempotent). The file stays: unlinking it would race a run locking it."""
        if self._fd < 0:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = -1


def lock_run_dir(var: Path) -> RunDirLock:
    """Take the exclusive lock of run directory ``var`` (created if missing) without waiting.

    Nothing else in ``var`` is touched: call it before deleting or rotating anything there.

    Parameters
    ----------
    var : Path
        The run directory (``[run] var_dir``, ``run --var``).

    Returns
    -------
    RunDirLock
        Held until :meth:`RunDirLock.release` or the process's end; the lock file holds this PID.

    Raises
    ------
    RunDirBusy
        If another live process holds it (the message names that process's PID, as it wrote it).
    """
    var.mkdir(parents=True, exist_ok=True)
    path = var / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: the holder's PID stays readable
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _holder_pid(fd)
        os.close(fd)
        raise RunDirBusy(var, pid) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return RunDirLock(path, fd)


def _holder_pid(fd: int) -> int | None:
    """The PID the lock's holder wrote (None when it has not written it yet)."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
