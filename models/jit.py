"""``numba.njit`` with the on-disk cache when it can be written: one decorator for every kernel in
``models/``; and the lock every ``parallel=True`` kernel launch holds.

numba's ``workqueue`` threading layer (its fallback when neither OpenMP nor TBB is installed)
aborts the process when two threads launch parallel kernels at once, and the stream's workers
are threads: :data:`PARALLEL_LAUNCH` serialises launches on any layer (each launch already uses
every core, so nothing is lost).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numba

__all__ = ["njit_cached", "PARALLEL_LAUNCH"]

PARALLEL_LAUNCH = threading.Lock()
"""Held while a ``parallel=True`` kernel runs (see the module docstring)."""


def njit_cached(**options: object) -> Callable[[Callable], Callable]:
    """``numba.njit`` with numba's on-disk cache (``cache=True``), or without it when no cache
    directory is writable (numba raises RuntimeError at decoration then: a read-only install
    with no writable ``NUMBA_CACHE_DIR`` / home); the kernel then compiles once per process."""
    def wrap(fn: Callable) -> Callable:
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError:
            return numba.njit(cache=False, **options)(fn)
    return wrap
