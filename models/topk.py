"""Top-k selection over score matrices with ``np.argpartition`` (no Python loop over rows)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["topk", "SCORE_CELLS"]

SCORE_CELLS = 1 << 24
"""Max (queries x items) float32 cells of dense scores a model holds at once (64 MB): its chunk of queries."""


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
        Ties are broken by the lower item index, so results are deterministic.

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
    s = np.asarray(scores, dtype=np.float32)
    if k < n_items:
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n_items), (n_q, n_items))
    part_val = np.take_along_axis(s, part, axis=1)
    order = np.lexsort((part, -part_val), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    top_val = np.take_along_axis(part_val, order, axis=1)
    bad = ~np.isfinite(top_val) & (top_val < 0)
    top = np.where(bad, -1, top)
    idx[:, :k] = top
    val[:, :k] = top_val
    return idx, val
