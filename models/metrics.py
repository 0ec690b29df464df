"""Top-k metrics with session-rec's exact definitions, vectorised over all queries at once.

Every function takes ``recs``, the ranked lists of shape (n_queries, n) int32 (``-1`` =
padding, never a hit), and returns the mean over queries. Next-item metrics (HR, MRR) use the
target item; list metrics (P, R, MAP) use the *rest* of the session (target onwards,
duplicates kept) given as CSR ``(indptr, items)``.

References
----------
Ludewig, Latifi, Jannach, "Empirical analysis of session-based recommendation algorithms",
UMUAI 2021; github.com/rn5l/session-rec, ``evaluation/metrics/accuracy.py``,
``accuracy_multiple.py``, ``coverage.py``, ``popularity.py``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["hr_at_k", "mrr_at_k", "rest_hits", "precision_at_k", "recall_at_k", "map_at_k",
           "coverage_at_k", "popularity_bias_at_k"]


def _check(recs: NDArray[np.integer], k: int) -> None:
    if recs.ndim != 2:
        raise ValueError(f"recs must be 2-D (n_queries, n); got shape {recs.shape}")
    if not 1 <= k <= recs.shape[1]:
        raise ValueError(f"k must lie in [1, {recs.shape[1]}] (the list length); got {k}")


def _mean(x: NDArray[np.floating]) -> float:
    return float(x.mean()) if len(x) else float("nan")


def hr_at_k(recs: NDArray[np.integer], target: NDArray[np.integer], k: int) -> float:
    """Hit rate@k: share of queries whose target is among the first ``k`` recommendations.

    Parameters
    ----------
    recs : ndarray of shape (n_queries, n), int
        Ranked item indices, best first; ``-1`` pads.
    target : ndarray of shape (n_queries,), int
        The next item of each query.
    k : int
        Cut-off, 1 <= k <= n.

    Returns
    -------
    float in [0, 1] (NaN for zero queries).

    Raises
    ------
    ValueError
        If ``recs`` is not 2-D, ``k`` is out of range or the lengths differ.
    """
    _check(recs, k)
    if len(target) != len(recs):
        raise ValueError(f"target must have one entry per query; got {len(target)} for {len(recs)} queries")
    return _mean((recs[:, :k] == np.asarray(target)[:, None]).any(axis=1).astype(np.float64))


def mrr_at_k(recs: NDArray[np.integer], target: NDArray[np.integer], k: int) -> float:
    """Mean reciprocal rank@k: mean of ``1/rank`` of the target, 0 when it is not in the top ``k``.

    Parameters and errors as :func:`hr_at_k`.
    """
    _check(recs, k)
    if len(target) != len(recs):
        raise ValueError(f"target must have one entry per query; got {len(target)} for {len(recs)} queries")
    hit = recs[:, :k] == np.asarray(target)[:, None]
    rr = np.where(hit.any(axis=1), 1.0 / (hit.argmax(axis=1) + 1.0), 0.0)
    return _mean(rr)


def rest_hits(recs: NDArray[np.integer], rest_indptr: NDArray[np.int64],
              rest_items: NDArray[np.integer]) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """Which recommendations are among each query's remaining items, and how many those are.

    Parameters
    ----------
    recs : ndarray of shape (n_queries, n), int
        Ranked lists; ``-1`` pads.
    rest_indptr : ndarray of shape (n_queries + 1,), int64
    rest_items : ndarray of shape (nnz,), int
        Remaining items of query ``q``: ``rest_items[rest_indptr[q]:rest_indptr[q+1]]``.

    Returns
    -------
    (hits, n_rest) : bool (n_queries, n) membership of ``recs[q, r]`` in the *set* of the
    rest, and int64 (n_queries,) rest length *with duplicates* (session-rec's recall divisor).

    Raises
    ------
    ValueError
        If ``rest_indptr`` does not have ``n_queries + 1`` entries.
    """
    n_q, n = recs.shape
    if len(rest_indptr) != n_q + 1:
        raise ValueError(f"rest_indptr must have n_queries + 1 = {n_q + 1} entries; got {len(rest_indptr)}")
    n_rest = np.diff(rest_indptr).astype(np.int64)
    base = int(max(recs.max(initial=0), np.max(rest_items, initial=0))) + 2
    q_of_rest = np.repeat(np.arange(n_q, dtype=np.int64), n_rest)
    rest_keys = np.unique(q_of_rest * base + np.asarray(rest_items, dtype=np.int64))
    rec_keys = np.arange(n_q, dtype=np.int64)[:, None] * base + recs.astype(np.int64)
    hits = np.isin(rec_keys, rest_keys) & (recs >= 0)
    return hits, n_rest


def precision_at_k(hits: NDArray[np.bool_], k: int) -> float:
    """P@k = |top-k ∩ set(rest)| / k, averaged over queries (session-rec ``Precision.add_multiple``).

    Parameters
    ----------
    hits : ndarray of shape (n_queries, n), bool
        From :func:`rest_hits`.
    k : int
        Cut-off, 1 <= k <= n.
    """
    _check(hits, k)
    return _mean(hits[:, :k].sum(axis=1) / k)


def recall_at_k(hits: NDArray[np.bool_], n_rest: NDArray[np.int64], k: int) -> float:
    """R@k = |top-k ∩ set(rest)| / len(rest), the length counting duplicates (session-rec ``Recall``).

    A session ``a b b`` seen after ``a`` has rest ``b b``: recommending ``b`` gives R = 1/2.
    """
    _check(hits, k)
    return _mean(hits[:, :k].sum(axis=1) / np.maximum(n_rest, 1))


def map_at_k(hits: NDArray[np.bool_], n_rest: NDArray[np.int64], k: int) -> float:
    """MAP@k exactly as session-rec's ``accuracy_multiple.MAP.add_multiple``.

    session-rec sums ``precision(top_i) * (recall(top_i) - recall(top_{i-1}))`` for
    ``i = 0 .. k-1`` where ``top_i`` is the first ``i`` items, precision divides by ``k`` (not
    by ``i``) and recall by ``len(rest)`` with duplicates. Hence

        MAP@k = sum_{r=1}^{k-1} hit_r * (hits in top r) / (k * len(rest)),

    and the k-th rank itself never contributes (``range(k)`` stops at ``top_{k-1}``).
    """
    _check(hits, k)
    h = hits[:, : k - 1].astype(np.float64)
    cum = np.cumsum(h, axis=1)
    return _mean((h * cum).sum(axis=1) / (k * np.maximum(n_rest, 1)))


def coverage_at_k(recs: NDArray[np.integer], k: int, n_items: int) -> float:
    """Share of the catalogue that appears in at least one top-k list (session-rec ``Coverage``).

    Parameters
    ----------
    recs : ndarray of shape (n_queries, n), int
    k : int
    n_items : int
        Number of distinct train items (the catalogue), > 0.
    """
    _check(recs, k)
    top = recs[:, :k]
    return float(len(np.unique(top[top >= 0]))) / n_items


def popularity_bias_at_k(recs: NDArray[np.integer], k: int, item_counts: NDArray[np.integer]) -> float:
    """Mean popularity of recommended items (session-rec ``Popularity``).

    Each item's popularity is its train event count divided by the largest count; a list
    scores the mean over its (valid) top-k items; lists without any valid item count 0.

    Parameters
    ----------
    recs : ndarray of shape (n_queries, n), int
    k : int
    item_counts : ndarray of shape (n_items,), int
        Train events per item.
    """
    _check(recs, k)
    pop = np.asarray(item_counts, dtype=np.float64)
    pop = pop / max(pop.max(initial=0.0), 1.0)
    top = recs[:, :k]
    valid = top >= 0
    vals = np.where(valid, pop[np.where(valid, top, 0)], 0.0)
    n_valid = valid.sum(axis=1)
    return _mean(np.where(n_valid > 0, vals.sum(axis=1) / np.maximum(n_valid, 1), 0.0))
