"""How many threads the models' kernels may use: torch's intra-op pool and numba's parallel kernels.

A batch of a few prefixes (the stream's per-event rescoring, an API request's cart list) is too small to
split: every parallel region then waits for a second thread to be woken and scheduled, and OpenMP's
waiting threads spin. On a busy 2-core box the fusion's one-prefix ``recommend`` cost 23 ms of CPU
and 73 ms of wall time with two threads, 3.7 ms and 10 ms with one, for the same lists
(bench/RESULTS.md, "One kernel thread for small batches"). :func:`kernel_threads` caps both pools for a
block; models that choose their own count (``GRU4Rec.score_threads``) ask :func:`thread_cap` first.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numba

__all__ = ["SMALL_BATCH_ROWS", "kernel_threads", "thread_cap", "small_batch_threads"]

SMALL_BATCH_ROWS = 64
"""Batches of fewer queries than this are scored on one kernel thread (:func:`small_batch_threads`)."""

_local = threading.local()


def thread_cap() -> int | None:
    """The cap :func:`kernel_threads` set on this thread, or ``None`` outside one."""
    return getattr(_local, "cap", None)


@contextmanager
def kernel_threads(n: int) -> Iterator[None]:
    """Run the block with at most ``n`` threads in torch and numba kernels, restoring both after.

    numba's count is per calling thread; torch's is per process (the flow scores on one thread per
    process, so nothing else changes it meanwhile). torch is only touched if it is already imported.

    Raises
    ------
    ValueError
        If ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    torch = sys.modules.get("torch")
    old_cap = thread_cap()
    old_numba = numba.get_num_threads()
    old_torch = torch.get_num_threads() if torch is not None else None
    _local.cap = n if old_cap is None else min(n, old_cap)
    numba.set_num_threads(min(old_numba, _local.cap))
    if torch is not None:
        torch.set_num_threads(min(old_torch, _local.cap))
    try:
        yield
    finally:
        _local.cap = old_cap
        numba.set_num_threads(old_numba)
        if torch is not None and old_torch is not None:
            torch.set_num_threads(old_torch)


@contextmanager
def small_batch_threads(n_queries: int) -> Iterator[None]:
    """:func:`kernel_threads` (1) for a batch of fewer than :data:`SMALL_BATCH_ROWS` queries; no cap otherwise."""
    if n_queries < SMALL_BATCH_ROWS:
        with kernel_threads(1):
            yield
    else:
        yield
