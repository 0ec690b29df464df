"""Co-visitation recommender: time-decayed counts of items seen close together in a session.

The spine's first real model. An event pair ``(a, b)`` within ``window`` positions of each other
in one session adds ``decay(age) * type_weight`` to ``C[a, b]`` and ``C[b, a]``, where
``decay(age) = 0.5 ** (age / half_life_s)`` and ``age`` is measured from the newest event of the
log. Rows are L1-normalised. A history scores ``sum_j w_j * C[h_j]`` with ``w_j`` decaying with the
position from the newest item (``position_decay ** (L - 1 - j)``), then popularity breaks ties.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Self

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from models.base import Histories, InteractionLog
from models.errors import ModelFormatError, NotFittedError
from models.persistence import construct_saved
from models.sparse_topk import prior_order, sparse_prior_topk, sparse_prior_topk_of_rows

__all__ = ["CoVisitation"]


class CoVisitation:
    """Item-to-item co-visitation over recent history with a popularity fallback.

    Parameters
    ----------
    window : int
        Max distance (positions) between two events of a session that count as co-visited.
    half_life_s : float
        Half-life of the time decay of a pair's weight, seconds.
    position_decay : float
        Weight ratio between consecutive history positions when scoring (1 = no decay).
    popularity_weight : float
        Share of (normalised) popularity added to every score; fills lists for cold histories.
    type_weights : tuple of float, optional
        Weight per event-type code of ``InteractionLog.event_type`` (default all 1).
    """

    dense_scores = False
    """``recommend`` never holds a (histories x items) score matrix (``models.sparse_topk``): callers
    need not chunk histories by catalogue size (``models.base.Recommender``)."""

    def __init__(self, window: int = 3, half_life_s: float = 30 * 86400.0, position_decay: float = 0.8,
                 popularity_weight: float = 1e-3, type_weights: tuple[float, ...] | None = None) -> None:
        self.window = window
        self.half_life_s = half_life_s
        self.position_decay = position_decay
        self.popularity_weight = popularity_weight
        self.type_weights = type_weights

    def _check(self) -> None:
        if not hasattr(self, "covisit_"):
            raise NotFittedError(self)

    def fit(self, log: InteractionLog) -> Self:
        """Count decayed co-visits. Memory O(n_events * window) for the pair arrays."""
        n = log.n_items
        age = (log.ts.max() - log.ts) if log.n_events else log.ts
        w = np.exp2(-age / self.half_life_s)
        if self.type_weights is not None and log.event_type is not None:
            w = w * np.asarray(self.type_weights, dtype=np.float64)[log.event_type]
        rows, cols, vals = [], [], []
        for d in range(1, self.window + 1):
            same = log.session_idx[d:] == log.session_idx[:-d]
            a, b = log.item_idx[:-d][same], log.item_idx[d:][same]
            v = (np.minimum(w[:-d], w[d:]) / d)[same]
            keep = a != b
            rows += [a[keep], b[keep]]
            cols += [b[keep], a[keep]]
            vals += [v[keep], v[keep]]
        r = np.concatenate(rows) if rows else np.zeros(0, np.int32)
        c = np.concatenate(cols) if cols else np.zeros(0, np.int32)
        v = np.concatenate(vals) if vals else np.zeros(0)
        m = sp.csr_array((v.astype(np.float32), (r, c)), shape=(n, n))
        m.sum_duplicates()
        rs = np.asarray(m.sum(axis=1)).ravel()
        m = sp.csr_array(sp.diags(np.where(rs > 0, 1.0 / np.maximum(rs, 1e-30), 0.0).astype(np.float32)) @ m)
        self.covisit_ = m.astype(np.float32)
        pop = np.bincount(log.item_idx, weights=w, minlength=n)
        self.popularity_ = (pop / max(pop.max(), 1e-30)).astype(np.float32)
        return self

    def _check_items(self, items: NDArray[np.integer], field: str) -> None:
        n = len(self.popularity_)
        if len(items) and (items.min() < 0 or items.max() >= n):
            bad = items[(items < 0) | (items >= n)][0]
            raise ValueError(f"{field}: item index {bad} outside the catalogue [0, {n})")

    def _history_matrix(self, histories: Histories) -> sp.csr_array:
        self._check_items(histories.items, "histories.items")
        lens = np.diff(histories.indptr)
        q = np.repeat(np.arange(histories.n_queries), lens)
        pos_from_end = np.concatenate([np.arange(n - 1, -1, -1) for n in lens]) if len(lens) else np.zeros(0)
        w = self.position_decay ** pos_from_end.astype(np.float64)
        return sp.csr_array((w.astype(np.float32), (q, histories.items)),
                            shape=(histories.n_queries, len(self.popularity_)))

    def recommend(self, histories: Histories, n: int = 20, *, exclude_seen: bool = False
                  ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Top-``n`` items per history: ids int32 (n_queries, n) padded with -1, scores float32."""
        self._check()
        h = self._history_matrix(histories)
        prior, order = self._prior(self.popularity_weight)
        # the dense scores' top-n (h @ C + prior) without the dense matrix: O(nnz) per history, not O(items)
        return sparse_prior_topk(h @ self.covisit_, prior, order, n, exclude=h if exclude_seen else None)

    def similar_items(self, item_idx: NDArray[np.int32], n: int = 20
                      ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Items most co-visited with each of ``item_idx`` (the item itself excluded)."""
        self._check()
        item_idx = np.asarray(item_idx, dtype=np.int32)
        self._check_items(item_idx, "item_idx")
        prior, order = self._prior(1e-6)
        return sparse_prior_topk_of_rows(self.covisit_, item_idx, prior, order, n)

    def _prior(self, weight: float) -> tuple[NDArray[np.float32], NDArray[np.int32]]:
        """``weight * popularity_`` (float32, as the dense sum adds it) and its order, kept per
        popularity array and weight (``models.sparse_topk``)."""
        cache = self.__dict__.setdefault("_priors", {})
        hit = cache.get(weight)
        if hit is None or hit[0] is not self.popularity_:
            prior = np.asarray(weight * self.popularity_, dtype=np.float32)
            hit = cache[weight] = (self.popularity_, prior, prior_order(prior))
        return hit[1], hit[2]

    def save(self, path: Path) -> None:
        self._check()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        m = self.covisit_
        np.savez(path / "covisit.npz", indptr=m.indptr, indices=m.indices, data=m.data,
                 shape=np.array(m.shape), popularity=self.popularity_)
        (path / "params.json").write_text(json.dumps({
            "class": "CoVisitation", "window": self.window, "half_life_s": self.half_life_s,
            "position_decay": self.position_decay, "popularity_weight": self.popularity_weight,
            "type_weights": self.type_weights}))

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        try:
            params = json.loads((path / "params.json").read_text())
            z = np.load(path / "covisit.npz", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModelFormatError(f"cannot load CoVisitation from {path}: {exc}") from exc
        if not isinstance(params, dict):
            raise ModelFormatError(f"cannot load CoVisitation from {path}: params.json must be an object")
        params.pop("class", None)
        tw = params.pop("type_weights", None)
        try:
            params["type_weights"] = tuple(tw) if tw else None
        except TypeError as exc:
            raise ModelFormatError(f"{path / 'params.json'}: type_weights: {exc}") from exc
        model = construct_saved(cls, params, path)
        model.covisit_ = sp.csr_array((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        model.popularity_ = z["popularity"]
        return model
