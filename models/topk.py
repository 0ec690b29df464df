"""Top-k selection over score matrices and score lists: compiled bounded heaps (``models.heap``), one pass
over the scores, no partition of a copy and no sort of all entries."""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

from models.heap import heap_offer, heap_order, heap_worse, sift_down
from models.jit import PARALLEL_LAUNCH, njit_cached

__all__ = ["topk", "SCORE_CELLS", "PARALLEL_ROWS", "ranks_among", "top_rows"]

SCORE_CELLS = 1 << 24
"""Max (queries x items) float32 cells of dense scores a model holds at once (64 MB): its chunk of queries."""

PARALLEL_ROWS = 64
"""``topk`` splits a matrix of at least this many rows over numba's threads (a model scoring a batch); fewer rows
(an API request's one) stay on the calling thread."""


def topk(scores: NDArray[np.floating], n: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """Indices and values of the ``n`` largest entries of each row, best first.

    Parameters
    ----------
    scores : ndarray of shape (n_queries, n_items), float
        Higher is better. ``-inf`` marks excluded items; they are returned as index ``-1``.
    n : int
        Items per row; may exceed ``n_items`` (the rest is padded with ``-1`` / ``-inf``).

    Returns
    -------
    (idx, val) : int32 and float32 arrays of shape (n_queries, n).
        Ties are broken by the lower item index, so results are deterministic. ``NaN`` entries are
        never selected.

    Raises
    ------
    ValueError
        If ``scores`` is not 2-D or ``n < 1``.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (n_queries, n_items); got shape {scores.shape}")
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    n_q, n_items = scores.shape
    k = min(n, n_items)
    idx = np.full((n_q, n), -1, dtype=np.int32)
    val = np.full((n_q, n), -np.inf, dtype=np.float32)
    if k == 0 or n_q == 0:
        return idx, val
    s = np.ascontiguousarray(scores, dtype=np.float32)
    if n_q >= PARALLEL_ROWS:
        with PARALLEL_LAUNCH:
            top, top_val = _dense_top_parallel(s, k)
    else:
        top, top_val = _dense_top_serial(s, k)
    bad = ~np.isfinite(top_val) & (top_val < 0)
    idx[:, :k] = np.where(bad, -1, top)
    val[:, :k] = top_val
    return idx, val


def ranks_among(rows: NDArray[np.integer], scores: NDArray[np.float32], which: NDArray[np.integer]
                ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Rank (0 = best) of the entries ``which`` in the order "score descending, ties by the lower row" of
    ``(rows, scores)``, and their scores, without sorting the entries: O(n log m) for m = ``len(which)``.

    What a ranking's positions of a few of its entries cost when the ranking itself is not needed
    (``api.vector_index.VectorIndex.ranking_positions``: a filter that selects a few items).

    Parameters
    ----------
    rows : ndarray of shape (n,), int
        Distinct row ids of the ranked entries.
    scores : ndarray of shape (n,), float32
        Their scores (no NaN).
    which : ndarray of shape (m,), int
        Indices into ``rows`` / ``scores`` (distinct).

    Returns
    -------
    (ranks, values) : int64 and float32 arrays of shape (m,), in the order of ``which``.
    """
    which = np.asarray(which, dtype=np.int64)
    if len(which) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    rows = np.asarray(rows, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    sel_s, sel_r = scores[which], rows[which]
    order = np.lexsort((sel_r, -sel_s))  # the selected entries best first
    below = _count_beaten(rows, scores, sel_s[order], sel_r[order])
    ranks = np.empty(len(which), dtype=np.int64)
    ranks[order] = np.cumsum(below)[:-1] - 1  # entries at or before each selected one in the order, itself excluded
    return ranks, sel_s


@njit_cached()
def _count_beaten(rows: NDArray[np.int64], scores: NDArray[np.float32], sel_s: NDArray[np.float32],
                  sel_r: NDArray[np.int64]) -> NDArray[np.int64]:  # pragma: no cover - compiled
    """``out[j]``: entries that exactly ``j`` of the (sorted, best first) selected entries come before."""
    m = len(sel_s)
    out = np.zeros(m + 1, dtype=np.int64)
    for i in range(len(scores)):
        s, r = scores[i], rows[i]
        lo, hi = 0, m
        while lo < hi:
            mid = (lo + hi) >> 1
            if sel_s[mid] > s or (sel_s[mid] == s and sel_r[mid] < r):
                lo = mid + 1
            else:
                hi = mid
        out[lo] += 1
    return out


def top_rows(rows: NDArray[np.integer], scores: NDArray[np.float32], k: int
             ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """The ``k`` best entries of ``(rows, scores)`` in the order "score descending, ties by the lower row", best
    first: O(n log k) in one compiled pass with a heap of ``k`` (``models.heap``; no partition of a copy of the
    scores, no sort of the n entries). The same entries and order as a lexsort of all of them by ``(-scores,
    rows)`` cut at ``k``.

    Parameters
    ----------
    rows : ndarray of shape (n,), int
        Distinct row ids of the entries.
    scores : ndarray of shape (n,), float32
        Their scores (no NaN).
    k : int
        Entries wanted (all of them when ``k >= n``; none when ``k <= 0``).

    Returns
    -------
    (rows, scores) : int64 and float32 arrays of shape (min(k, n),), best first.
    """
    rows = np.asarray(rows, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    k = max(min(int(k), len(rows)), 0)
    return _heap_top(rows, scores, k)


@njit_cached()
def _heap_top(rows: NDArray[np.int64], scores: NDArray[np.float32], k: int
              ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:  # pragma: no cover - compiled
    """``models.heap``'s bounded heap over the entries (float32 scores held exactly as float64), best first."""
    hs = np.empty(k, dtype=np.float64)
    hi = np.empty(k, dtype=np.int64)
    if k == 0:
        return hi, hs.astype(np.float32)
    size = 0
    for i in range(len(scores)):
        s, r = np.float64(scores[i]), rows[i]
        if size < k:
            size = heap_offer(hs, hi, size, k, s, r)
        elif heap_worse(hs[0], hi[0], s, r):  # most entries stop at this one comparison, inlined
            hs[0], hi[0] = s, r
            sift_down(hs, hi, size)
    order = heap_order(hs, hi, size)
    return hi[order], hs[order].astype(np.float32)


TOP_BLOCK = 64
"""Entries per block of a row whose maxima bound the row's k-th best (``_dense_top_row``)."""


_LANES = 16


@njit_cached()
def _block_maxima(row: NDArray[np.float32], out: NDArray[np.float32]) -> None:  # pragma: no cover - compiled
    """``out[b]``: the largest non-NaN entry of ``row[b * TOP_BLOCK:(b + 1) * TOP_BLOCK]`` (``-inf`` if none).

    :data:`_LANES` running maxima per block, each a select ``v if v > m else m`` (NaN never taken): a loop across
    lanes that compiles to vector maxima without fast-math (bench/RESULTS.md, issue 11 session 28).
    """
    n = row.shape[0]
    lane = np.empty(_LANES, np.float32)
    full = n // TOP_BLOCK
    for b in range(full):
        lo = b * TOP_BLOCK
        lane[:] = -np.inf
        for t in range(lo, lo + TOP_BLOCK, _LANES):
            for j in range(_LANES):
                v = row[t + j]
                lane[j] = v if v > lane[j] else lane[j]
        m = lane[0]
        for j in range(1, _LANES):
            m = lane[j] if lane[j] > m else m
        out[b] = m
    if full < out.shape[0]:
        m = np.float32(-np.inf)
        for t in range(full * TOP_BLOCK, n):
            m = row[t] if row[t] > m else m
        out[full] = m


@njit_cached(inline="always")
def _dense_top_row(scores: NDArray[np.float32], k: int, q: int, idx: NDArray[np.int32], val: NDArray[np.float32],
                   hs: NDArray[np.float64], hi: NDArray[np.int64]) -> None:  # pragma: no cover - compiled
    """Row ``q``'s ``k`` best (score descending, column ascending) entries into ``idx[q]`` / ``val[q]``, best
    first, by a bounded heap (``hs`` / ``hi``: its scratch of ``k``); ``NaN`` skipped.

    A row of at least ``4 k`` blocks of :data:`TOP_BLOCK` entries is bounded first: the ``k``-th largest block
    maximum (NaN ignored) ``tau`` is at most the row's ``k``-th best entry (``k`` blocks reach it), so only the
    entries that reach ``tau``, in the blocks whose maximum reaches it, are offered to the heap, in column
    order. The heap keeps the ``k`` best of what it is offered, and every one of the row's ``k`` best is
    offered: the same entries as offering all (2.2x faster on 37k items, bench/RESULTS.md, issue 11 session 28).
    """
    size = 0
    row = scores[q]
    n = row.shape[0]
    n_blocks = (n + TOP_BLOCK - 1) // TOP_BLOCK
    if n_blocks >= 4 * k:
        maxima = np.empty(n_blocks, np.float32)
        _block_maxima(row, maxima)
        tau = np.partition(maxima, n_blocks - k)[n_blocks - k]
        for b in range(n_blocks):
            if maxima[b] < tau:
                continue
            for j in range(b * TOP_BLOCK, min(n, (b + 1) * TOP_BLOCK)):
                if not row[j] >= tau:  # below the bound (or NaN): never among the k best
                    continue
                s = np.float64(row[j])
                if size < k:
                    size = heap_offer(hs, hi, size, k, s, j)
                elif s > hs[0]:  # a later column never wins a tie: only a strictly higher score gets in
                    hs[0], hi[0] = s, j
                    sift_down(hs, hi, size)
    else:
        for j in range(n):
            s = np.float64(row[j])
            if s != s:
                continue
            if size < k:
                size = heap_offer(hs, hi, size, k, s, j)
            elif s > hs[0]:  # a later column never wins a tie: only a strictly higher score gets in
                hs[0], hi[0] = s, j
                sift_down(hs, hi, size)
    order = heap_order(hs, hi, size)
    for r in range(size):
        idx[q, r] = hi[order[r]]
        val[q, r] = hs[order[r]]


@njit_cached()
def _dense_top_serial(scores: NDArray[np.float32], k: int
                      ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:  # pragma: no cover - compiled
    """Each row's ``k`` best entries (see ``_dense_top_row``), rows with fewer padded with ``-1`` / ``-inf``."""
    idx = np.full((scores.shape[0], k), -1, dtype=np.int32)
    val = np.full((scores.shape[0], k), -np.inf, dtype=np.float32)
    hs = np.empty(k, dtype=np.float64)
    hi = np.empty(k, dtype=np.int64)
    for q in range(scores.shape[0]):
        _dense_top_row(scores, k, q, idx, val, hs, hi)
    return idx, val


@njit_cached(parallel=True)
def _dense_top_parallel(scores: NDArray[np.float32], k: int
                        ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:  # pragma: no cover - compiled
    """``_dense_top_serial`` with the rows split over numba's threads (a heap per row): the same answers."""
    idx = np.full((scores.shape[0], k), -1, dtype=np.int32)
    val = np.full((scores.shape[0], k), -np.inf, dtype=np.float32)
    for q in numba.prange(scores.shape[0]):
        hs = np.empty(k, dtype=np.float64)
        hi = np.empty(k, dtype=np.int64)
        _dense_top_row(scores, k, q, idx, val, hs, hi)
    return idx, val
