"""Why an item was recommended: the history items that contributed most to its score.

Computed from the model itself, not made up. For a model with an item-item matrix (the
co-visitation model's ``covisit_``, rows L1-normalised) the score of item ``i`` for a history
``h_0 .. h_{L-1}`` (oldest first) is ``sum_j w_j C[h_j, i] + popularity_weight * pop[i]`` with
``w_j = position_decay ** (L - 1 - j)``; each term is one history item's contribution, and the
popularity term is reported as ``popularity``.

For EMDE the input sketch is the concatenation of one block per modality (and view); a
modality's contribution to an item is how much the item's log-score drops when that modality's
blocks are zeroed in the input sketch and the network scores again (an ablation through the
model, ``log s(all) - log s(all but m)``). Models with neither structure return no contributions
(the caller says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from models.base import Histories

__all__ = ["Contribution", "supports_contributions", "history_contributions", "supports_modalities",
           "modality_contributions"]


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


def supports_modalities(model: object) -> bool:
    """True for an EMDE-like model: modality blocks in a sketch layout and ``score_sketches``."""
    return all(hasattr(model, a) for a in ("score_sketches", "layout_", "modality_specs_", "item_in_cols_"))


def modality_contributions(model: object, item_index: dict[str, int], history: Sequence[str],
                           items: Sequence[str]) -> dict[str, list[Contribution]]:
    """Per item, each input modality's contribution (log-score drop when it is ablated), strongest first.

    Parameters
    ----------
    model : EMDE-like (see ``supports_modalities``)
    item_index : dict of str to int
    history : sequence of str
        The history, oldest first (unknown ids dropped).
    items : sequence of str

    Returns
    -------
    dict item_id -> list of Contribution(``modality:<name>``, nats, share of the positive drops).
    Empty lists for unknown items or an empty history.
    """
    if not supports_modalities(model):
        raise ValueError(f"model: {type(model).__name__} has no modality sketch layout")
    m: Any = model
    out: dict[str, list[Contribution]] = {i: [] for i in items}
    hist = [item_index[h] for h in history if h in item_index]
    known = [(i, item_index[i]) for i in items if i in item_index]
    if not hist or not known:
        return out
    raw = m.layout_.raw_sketches(m.item_in_cols_, Histories.from_lists([hist]), getattr(m, "neighbours_", None))
    full = (raw.toarray() if sp.issparse(raw) else np.asarray(raw)).astype(np.float32)
    cols = np.array([c for _, c in known], dtype=np.int64)
    variants, names, off = [full], [], 0
    for spec in m.modality_specs_:
        if not spec.input:
            continue
        block = spec.depth * spec.width
        ablated = full.copy()
        for view in m.layout_.views:
            start = m.layout_.offset(view) + off
            ablated[:, start:start + block] = 0.0
        variants.append(ablated)
        names.append(f"modality:{spec.name}")
        off += block
    scores = np.asarray(m.score_sketches(np.vstack(variants)), dtype=np.float64)[:, cols]  # (1 + M, n)
    logs = np.log(np.maximum(scores, 1e-30))
    drops = logs[0][None, :] - logs[1:]                                                     # (M, n)
    for j, (item, _) in enumerate(known):
        pos = drops[:, j].clip(min=0).sum()
        order = np.argsort(-drops[:, j], kind="stable")
        out[item] = [Contribution(names[k], float(drops[k, j]), float(max(drops[k, j], 0) / pos) if pos > 0 else 0.0)
                     for k in order]
    return out
