"""Why an item was recommended: the history items that contributed most to its score.

Computed from the model itself, not made up. For a model with an item-item matrix (the
co-visitation model's ``covisit_``, rows L1-normalised) the score of item ``i`` for a history
``h_0 .. h_{L-1}`` (oldest first) is ``sum_j w_j C[h_j, i] + popularity_weight * pop[i]`` with
``w_j = position_decay ** (L - 1 - j)``; each term is one history item's contribution, and the
popularity term is reported as ``popularity``. Models without such a decomposition return no
contributions (the caller says so) -- an EMDE model would report per-modality sketch terms here
once it exposes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Contribution", "supports_contributions", "history_contributions"]


@dataclass(frozen=True)
class Contribution:
    """One term of an item's score: a history item (or ``popularity``) and its share of the score."""

    source: str
    value: float
    share: float


def supports_contributions(model: object) -> bool:
    """True when ``model`` has an item-item matrix whose rows decompose its scores."""
    return hasattr(model, "covisit_") and hasattr(model, "popularity_")


def history_contributions(model: object, item_index: dict[str, int], history: Sequence[str],
                          items: Sequence[str], top: int = 3) -> dict[str, list[Contribution]]:
    """The ``top`` strongest terms of each item's score (history items and popularity).

    Parameters
    ----------
    model : CoVisitation-like
        Has ``covisit_`` (csr, n_items x n_items), ``popularity_`` (n_items,), ``position_decay``
        and ``popularity_weight``.
    item_index : dict of str to int
        Item id -> row of the model.
    history : sequence of str
        The history, oldest first; ids unknown to the model are dropped before positions are
        counted, as the strategies do before calling ``recommend``.
    items : sequence of str
        Recommended items to explain.
    top : int
        Terms kept per item, strongest first.

    Returns
    -------
    dict item_id -> list of Contribution; ``share`` is value / total score (0 when the score is 0).
    Items unknown to the model get an empty list.

    Raises
    ------
    ValueError
        If ``model`` has no item-item matrix (see ``supports_contributions``).
    """
    if not supports_contributions(model):
        raise ValueError(f"model: {type(model).__name__} has no item-item matrix to decompose scores")
    weights: dict[str, float] = {}  # a history item seen twice contributes through both positions
    decay = float(getattr(model, "position_decay", 1.0))
    known_hist = [h for h in history if h in item_index]  # what the model scored: known items only
    for pos, h in enumerate(known_hist):
        weights[h] = weights.get(h, 0.0) + decay ** (len(known_hist) - 1 - pos)
    hist = [(h, item_index[h]) for h in weights]
    known = [(i, item_index[i]) for i in items if i in item_index]
    out: dict[str, list[Contribution]] = {i: [] for i in items}
    if not known:
        return out
    cols = np.array([c for _, c in known], dtype=np.int64)
    pop_w = float(getattr(model, "popularity_weight", 0.0))
    pop = pop_w * np.asarray(model.popularity_, dtype=np.float64)[cols]  # type: ignore[attr-defined]
    if hist:
        rows = np.array([r for _, r in hist], dtype=np.int64)
        w = np.array([weights[h] for h, _ in hist])
        terms = model.covisit_[rows][:, cols].toarray() * w[:, None]  # type: ignore[attr-defined]  # (L, n)
    else:
        terms = np.zeros((0, len(cols)))
    names = [h for h, _ in hist] + ["popularity"]
    allt = np.vstack([terms, pop[None, :]])                       # (L + 1, n)
    totals = allt.sum(axis=0)
    for j, (item, _) in enumerate(known):
        col = allt[:, j]
        order = np.argsort(-col, kind="stable")[:top]
        out[item] = [Contribution(names[k], float(col[k]), float(col[k] / totals[j]) if totals[j] > 0 else 0.0)
                     for k in order if col[k] > 0]
    return out
