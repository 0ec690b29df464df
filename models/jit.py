"""``numba.njit`` with the on-disk cache when it can be written: one decorator for every kernel in ``models/``."""

from __future__ import annotations

from collections.abc import Callable

import numba

__all__ = ["njit_cached"]


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
