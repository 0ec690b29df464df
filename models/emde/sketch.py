"""EMDE sketches: an item is K one-hot blocks, a set is their (decayed) sum.

A sketch lives in a flat float32 vector. Every item owns one *column* per depth row
(``item_cols``: the column index ``offset + d * width + code[d]`` of its bucket in row
``d``), so a set's sketch is a scatter-add of its items' columns, and sketches are additive:
``sketch(A ∪ B) == sketch(A) + sketch(B)``. History sketches decay with time,
``weight = alpha ** (w * dt)``, where ``dt`` is in the unit the caller chose (seconds for
user histories, positions for session prefixes).

The real-time stream keeps one raw sketch per user and view and calls
:func:`update_sketch` per event; batch training calls :func:`history_sketches`, which
builds exactly the same numbers for many prefixes at once.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from models.jit import njit_cached

__all__ = [
    "item_columns",
    "decay_factor",
    "update_sketch",
    "set_sketch",
    "history_weights",
    "history_sketches",
    "last_item_sketches",
]


def item_columns(codes: NDArray[np.integer], width: int, offset: int = 0) -> NDArray[np.int32]:
    """Column of each item's bucket in each depth row of a flat sketch.

    Parameters
    ----------
    codes : ndarray of shape (n_items, depth), int
        Bucket of each item per partitioning, values in ``[0, width)`` (from DLSH).
    width : int
        Buckets per depth row.
    offset : int, default 0
        First column of this block in the flat sketch (to concatenate modalities).

    Returns
    -------
    ndarray of shape (n_items, depth), int32: ``offset + d * width + codes[:, d]``.

    Raises
    ------
    ValueError
        If a code lies outside ``[0, width)``.
    """
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or codes.max() >= width):
        raise ValueError(f"codes must lie in [0, width={width}); got range [{codes.min()}, {codes.max()}]")
    depth = codes.shape[1]
    return (offset + np.arange(depth, dtype=np.int64) * width + codes).astype(np.int32)


def decay_factor(dt: NDArray[np.floating] | float, alpha: float, w: float = 1.0) -> NDArray[np.float64]:
    """Time-decay weight ``alpha ** (w * dt)`` (1 for ``dt = 0``; ``alpha`` in (0, 1]).

    Parameters
    ----------
    dt : float or ndarray, >= 0
        Age of an event (seconds, or positions for session prefixes).
    alpha : float
        Decay base in (0, 1]; 1 disables decay.
    w : float, default 1
        Rate: ``alpha`` per ``1 / w`` units of ``dt``.

    Raises
    ------
    ValueError
        If ``alpha`` is outside (0, 1].
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must lie in (0, 1]; got {alpha}")
    return np.power(alpha, w * np.asarray(dt, dtype=np.float64))


def update_sketch(
    sketch: NDArray[np.float32],
    item_cols: NDArray[np.integer],
    weight: float = 1.0,
    decay: float = 1.0,
) -> NDArray[np.float32]:
    """Add one event to a sketch in place: ``sketch *= decay; sketch[item_cols] += weight``.

    This is the per-event update of the real-time stream: with
    ``decay = decay_factor(t_event - t_last, alpha, w)`` a sketch updated event by event
    equals :func:`history_sketches` of the whole history evaluated at the last event.
    The scatter touches ``depth`` cells; the decay is one vectorised multiply (skipped
    when ``decay == 1``).

    Parameters
    ----------
    sketch : ndarray of shape (sketch_dim,), float32
        Raw (unnormalised) sketch, modified in place.
    item_cols : ndarray of shape (depth,), int
        The item's columns (a row of :func:`item_columns`, plus the view's offset).
    weight : float, default 1
        Weight of the event (e.g. by event type or quantity).
    decay : float, default 1
        Factor applied to the old content before adding.

    Returns
    -------
    The same ``sketch`` array.
    """
    if decay != 1.0:
        sketch *= np.float32(decay)
    np.add.at(sketch, np.asarray(item_cols), np.float32(weight))
    return sketch


def set_sketch(item_cols: NDArray[np.integer], items: NDArray[np.integer], sketch_dim: int,
               weights: NDArray[np.floating] | None = None) -> NDArray[np.float32]:
    """Sketch of one (weighted) multiset of items: the sum of the items' one-hot blocks.

    Parameters
    ----------
    item_cols : ndarray of shape (n_items, depth), int
    items : ndarray of shape (m,), int item indices (repeats count twice)
    sketch_dim : int
        Length of the flat sketch.
    weights : ndarray of shape (m,), float, optional
        Per-item weight (default 1).

    Returns
    -------
    ndarray of shape (sketch_dim,), float32
    """
    out = np.zeros(sketch_dim, dtype=np.float32)
    cols = item_cols[np.asarray(items, dtype=np.int64)]
    w = np.ones(len(cols), dtype=np.float32) if weights is None else np.asarray(weights, np.float32)
    np.add.at(out, cols.ravel(), np.repeat(w, cols.shape[1]))
    return out


def history_weights(
    indptr: NDArray[np.int64],
    ts: NDArray[np.floating] | None,
    alpha: float,
    w: float = 1.0,
) -> NDArray[np.float64]:
    """Decay weight of every event of a CSR batch of histories, relative to its last event.

    Parameters
    ----------
    indptr : ndarray of shape (n_queries + 1,), int64
    ts : ndarray of shape (nnz,), float, optional
        Event times; when ``None`` the age is the number of positions before the last.
    alpha, w : float
        See :func:`decay_factor`.

    Returns
    -------
    ndarray of shape (nnz,), float64
    """
    lens = np.diff(indptr)
    q = np.repeat(np.arange(len(lens)), lens)
    last = indptr[1:] - 1
    if ts is None:
        age = (last[q] - np.arange(indptr[-1])).astype(np.float64)
    else:
        ts = np.asarray(ts, dtype=np.float64)
        age = np.maximum(ts[last[q]] - ts, 0.0)
    return decay_factor(age, alpha, w)


def history_sketches(
    item_cols: NDArray[np.integer],
    indptr: NDArray[np.int64],
    items: NDArray[np.integer],
    sketch_dim: int,
    weights: NDArray[np.floating] | None = None,
) -> sp.csr_array:
    """Sketches of a CSR batch of histories as a sparse matrix (one row per history).

    Parameters
    ----------
    item_cols : ndarray of shape (n_items, depth), int
    indptr : ndarray of shape (n_queries + 1,), int64
    items : ndarray of shape (nnz,), int item indices
    sketch_dim : int
    weights : ndarray of shape (nnz,), float, optional
        Per-event weights, e.g. from :func:`history_weights` (default 1).

    Returns
    -------
    csr_array of shape (n_queries, sketch_dim), float32, in canonical form (columns sorted,
    duplicates summed). Each history's sums run in float64 over its events in order and are
    rounded once, so a history's sketch does not depend on the batch it is built in (a compiled
    kernel; the stream's recomputation and the training batches share it).

    Raises
    ------
    ValueError
        If ``weights`` does not have one entry per event or an item lies outside ``item_cols``.
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    q = len(indptr) - 1
    cols = np.ascontiguousarray(item_cols, dtype=np.int32)
    its = np.ascontiguousarray(items, dtype=np.int64)
    w = np.ones(len(its), np.float32) if weights is None else np.ascontiguousarray(weights, dtype=np.float32)
    if len(w) != len(its):
        raise ValueError(f"weights must have one entry per event ({len(its)}); got {len(w)}")
    n_events = int(indptr[-1] - indptr[0])
    if n_events and (its.min() < 0 or its.max() >= cols.shape[0]):
        raise ValueError(f"item indices must lie in [0, {cols.shape[0]})")
    out_ptr = np.zeros(q + 1, np.int64)
    out_cols = np.empty(n_events * cols.shape[1], np.int32)
    out_vals = np.empty(n_events * cols.shape[1], np.float32)
    if q:
        _history_sketch_kernel(cols, indptr, its, w, sketch_dim, out_ptr, out_cols, out_vals)
    nnz = int(out_ptr[-1])
    m = sp.csr_array((out_vals[:nnz], out_cols[:nnz], out_ptr), shape=(q, sketch_dim))
    m.has_sorted_indices = True
    m.has_canonical_format = True
    return m


@njit_cached(nogil=True)
def _history_sketch_kernel(item_cols: NDArray[np.int32], indptr: NDArray[np.int64], items: NDArray[np.int64],
                           weights: NDArray[np.float32], sketch_dim: int, out_ptr: NDArray[np.int64],
                           out_cols: NDArray[np.int32], out_vals: NDArray[np.float32]) -> None:
    """Scatter-add each history's item columns into a float64 row (events in order), then write
    the row's touched columns sorted, their sums rounded once to float32: a history's sketch does
    not depend on the batch it is built in."""
    depth = item_cols.shape[1]
    acc = np.zeros(sketch_dim, np.float64)
    hit = np.zeros(sketch_dim, np.bool_)
    touched = np.empty(max(1, out_cols.shape[0]), np.int64)
    nnz = 0
    base = indptr[0]
    for a in range(len(indptr) - 1):
        n_t = 0
        lo, hi = sketch_dim, -1
        for e in range(indptr[a] - base, indptr[a + 1] - base):
            it, wt = items[e], np.float64(weights[e])
            for d in range(depth):
                c = item_cols[it, d]
                acc[c] += wt
                if not hit[c]:
                    hit[c] = True
                    touched[n_t] = c
                    n_t += 1
                    lo = min(lo, c)
                    hi = max(hi, c)
        if n_t * 16 < hi - lo + 1:  # few columns: sort them; many: read the touched span in order
            cs = np.sort(touched[:n_t])
            for j in range(n_t):
                c = cs[j]
                out_cols[nnz] = c
                out_vals[nnz] = np.float32(acc[c])
                acc[c] = 0.0
                hit[c] = False
                nnz += 1
        else:
            for c in range(lo, hi + 1):
                if hit[c]:
                    out_cols[nnz] = c
                    out_vals[nnz] = np.float32(acc[c])
                    acc[c] = 0.0
                    hit[c] = False
                    nnz += 1
        out_ptr[a + 1] = nnz


def last_item_sketches(item_cols: NDArray[np.integer], indptr: NDArray[np.int64],
                       items: NDArray[np.integer], sketch_dim: int) -> sp.csr_array:
    """Sketch of the newest item of each history (empty rows for empty histories).

    Returns
    -------
    csr_array of shape (n_queries, sketch_dim), float32
    """
    indptr = np.asarray(indptr)
    lens = np.diff(indptr)
    nonempty = np.flatnonzero(lens > 0)
    sub_ptr = np.zeros(len(lens) + 1, dtype=np.int64)
    sub_ptr[1:] = np.cumsum(lens > 0)
    last_items = np.asarray(items)[indptr[1:][nonempty] - 1]
    return history_sketches(item_cols, sub_ptr, last_items, sketch_dim)
