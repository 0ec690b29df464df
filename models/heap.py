"""A bounded heap of the ``cap`` best (score descending, id ascending) entries, for compiled top-k
loops: the worst entry sits at the root, so an offer costs one comparison unless it gets in.
Used by the session-kNN kernel and EMDE's readout."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from models.jit import njit_cached

__all__ = ["heap_worse", "heap_offer", "sift_down", "heap_order"]


@njit_cached(inline="always")
def heap_worse(s1: float, i1: int, s2: float, i2: int) -> bool:
    """True when (s1, i1) ranks below (s2, i2): a lower score, or the same score and a higher id."""
    return s1 < s2 or (s1 == s2 and i1 > i2)


@njit_cached()
def heap_offer(hs: NDArray[np.float64], hi: NDArray[np.int64], size: int, cap: int, s: float, it: int) -> int:
    """Offer ``(s, it)`` to a heap of the ``cap`` best (score desc, id asc) whose root is the worst; return its size."""
    if size < cap:
        j = size
        size += 1
        while j > 0:
            p = (j - 1) >> 1
            if not heap_worse(s, it, hs[p], hi[p]):
                break
            hs[j], hi[j] = hs[p], hi[p]
            j = p
        hs[j], hi[j] = s, it
        return size
    if heap_worse(hs[0], hi[0], s, it):
        hs[0], hi[0] = s, it
        sift_down(hs, hi, size)
    return size


@njit_cached()
def sift_down(hs: NDArray[np.float64], hi: NDArray[np.int64], size: int) -> None:
    """Restore the worst-at-root heap order of ``hs[:size]`` / ``hi[:size]`` after the root changed."""
    j = 0
    s, it = hs[0], hi[0]
    while True:
        c = 2 * j + 1
        if c >= size:
            break
        if c + 1 < size and heap_worse(hs[c + 1], hi[c + 1], hs[c], hi[c]):
            c += 1
        if not heap_worse(hs[c], hi[c], s, it):
            break
        hs[j], hi[j] = hs[c], hi[c]
        j = c
    hs[j], hi[j] = s, it



@njit_cached()
def heap_order(hs: NDArray[np.float64], hi: NDArray[np.int64], size: int) -> NDArray[np.int64]:
    """Positions of the heap's ``size`` entries, best first (score descending, then id ascending)."""
    order = np.argsort(hi[:size], kind="mergesort")  # by id, then stably by score (desc)
    return order[np.argsort(-hs[:size][order], kind="mergesort")]
