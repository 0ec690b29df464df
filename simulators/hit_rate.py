"""Hit-rate helpers that compare recommendation lists to a known ground truth, and their chance levels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set

import numpy as np
from numpy.typing import NDArray

__all__ = ["hit_rate_at_k", "precision_at_k", "random_hit_rate_at_k"]


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k: must be >= 1; got {k}")


def hit_rate_at_k(recs: Mapping[str, Sequence[str]], truth: Mapping[str, Set[str]], k: int) -> float:
    """HR@k: share of users in ``recs`` whose first ``k`` items contain at least one item of their ``truth``.

    Users with an empty ``truth`` count as misses. Returns ``nan`` for an empty ``recs``.
    """
    _check_k(k)
    if not recs:
        return float("nan")
    hits = sum(1 for u, items in recs.items() if not truth[u].isdisjoint(items[:k]))
    return hits / len(recs)


def precision_at_k(recs: Mapping[str, Sequence[str]], truth: Mapping[str, Set[str]], k: int) -> float:
    """Mean over users in ``recs`` of |first ``k`` items ∩ truth| / ``k`` (short lists are not padded)."""
    _check_k(k)
    if not recs:
        return float("nan")
    return float(np.mean([len(truth[u].intersection(items[:k])) / k for u, items in recs.items()]))


def random_hit_rate_at_k(truth_sizes: NDArray[np.int_], n_items: int, k: int) -> float:
    """Expected HR@k of ``k`` distinct items drawn uniformly from ``n_items``, averaged over users.

    Parameters
    ----------
    truth_sizes : ndarray of shape (n_users,), int
        Size of each user's ground truth (each <= ``n_items``).
    n_items : int
        Catalog size the random items are drawn from.
    k : int
        List length.

    Returns
    -------
    float: mean over users of ``1 - C(n_items - g, k) / C(n_items, k)`` (hypergeometric, exact).
    """
    _check_k(k)
    g = np.asarray(truth_sizes, dtype=np.float64)
    if len(g) == 0:
        return float("nan")
    k = min(k, n_items)
    j = np.arange(k, dtype=np.float64)
    # P(no hit) = prod_j (n - g - j) / (n - j)
    miss = np.prod(np.clip((n_items - g[:, None] - j[None, :]) / (n_items - j[None, :]), 0.0, None), axis=1)
    return float(np.mean(1.0 - miss))
