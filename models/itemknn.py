"""Item-kNN: co-occurrence in sessions, recommend the neighbours of the last item (session-rec ``iknn``)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Self

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from models.base import Histories, InteractionLog
from models.errors import ModelFitError, NotFittedError
from models.persistence import construct_saved, load_model_dir, save_model_dir
from models.ragged_topk import select_per_row, top_per_row
from models.session_index import check_histories

__all__ = ["ItemKNN"]


_BLOCK_PRODUCTS = 4_000_000
"""Multiply-adds per block of item rows when counting co-occurrences (bounds memory)."""


def _row_blocks(et: sp.csr_array, e: sp.csr_array) -> list[tuple[int, int]]:
    """Blocks of item rows whose share of ``et @ e`` costs about ``_BLOCK_PRODUCTS`` each."""
    sess_len = np.diff(e.indptr).astype(np.float64)
    cost = np.bincount(np.repeat(np.arange(et.shape[0]), np.diff(et.indptr)),
                       weights=sess_len[et.indices], minlength=et.shape[0])
    edges = np.searchsorted(np.cumsum(cost), np.arange(1, int(cost.sum() // _BLOCK_PRODUCTS) + 1) * _BLOCK_PRODUCTS)
    bounds = np.unique(np.concatenate([[0], edges, [et.shape[0]]]))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


class ItemKNN:
    """Item-to-item kNN over session co-occurrence.

    ``sim(i, j) = C[i, j] / ((n_i + lmbd) ** alpha * (n_j + lmbd) ** (1 - alpha))`` where
    ``C[i, j] = sum over sessions of count(i) * count(j)`` (events, duplicates counted, ``C[i, i] = 0``)
    and ``n_i`` is the event count of ``i``. Each item keeps its ``n_sims`` most similar items;
    a prefix is scored by the neighbours of its last item.

    Parameters
    ----------
    n_sims : int
        Neighbours kept per item.
    lmbd : float
        Support regulariser.
    alpha : float
        Balance of the two supports in the normaliser, in [0, 1].

    Attributes
    ----------
    sims_ : csr_array of shape (n_items, n_items), float32
        At most ``n_sims`` similarities per row.

    References
    ----------
    Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks", ICLR 2016
    (the item-kNN baseline); session-rec ``algorithms/knn/iknn.py``.
    """

    def __init__(self, n_sims: int = 100, lmbd: float = 20.0, alpha: float = 0.5) -> None:
        self.n_sims = n_sims
        self.lmbd = lmbd
        self.alpha = alpha

    def get_params(self) -> dict[str, object]:
        """Constructor arguments as stored."""
        return {n: getattr(self, n) for n in inspect.signature(type(self).__init__).parameters if n != "self"}

    def fit(self, log: InteractionLog) -> Self:
        """Count co-occurrences and keep each item's ``n_sims`` best neighbours.

        Raises
        ------
        ValueError
            If ``n_sims < 1`` or ``alpha`` is outside [0, 1].
        ModelFitError
            If the log holds no events.
        """
        if self.n_sims < 1:
            raise ValueError(f"n_sims: must be >= 1; got {self.n_sims}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha: must lie in [0, 1]; got {self.alpha}")
        if log.n_events == 0:
            raise ModelFitError("ItemKNN.fit: the log holds no events")
        e = sp.csr_array((np.ones(log.n_events, dtype=np.float64), (log.session_idx, log.item_idx)),
                         shape=(log.n_sessions, log.n_items))
        e.sum_duplicates()
        et = e.T.tocsr()
        supp = np.bincount(log.item_idx, minlength=log.n_items).astype(np.float64)
        parts = []
        for lo, hi in _row_blocks(et, e):
            c = (et[lo:hi] @ e).tocsr()   # co-occurrence rows lo..hi-1, canonical
            c.sort_indices()
            rows = lo + np.repeat(np.arange(hi - lo, dtype=np.int64), np.diff(c.indptr))
            cols = c.indices.astype(np.int64)
            off = rows != cols
            rows, cols, vals = rows[off], cols[off], c.data[off]
            vals = vals / ((supp[rows] + self.lmbd) ** self.alpha * (supp[cols] + self.lmbd) ** (1.0 - self.alpha))
            sel = select_per_row(rows, [-vals, cols], self.n_sims)
            parts.append((rows[sel], cols[sel], vals[sel]))
        rows, cols, vals = (np.concatenate(x) for x in zip(*parts, strict=True))
        self.sims_ = sp.csr_array((vals.astype(np.float32), (rows, cols)), shape=(log.n_items, log.n_items))
        return self

    def _sims(self) -> sp.csr_array:
        if not hasattr(self, "sims_"):
            raise NotFittedError(self)
        return self.sims_

    def recommend(self, histories: Histories, n: int = 20, *, exclude_seen: bool = False
                  ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Neighbours of each prefix's last item, best first; (ids int32, scores float32), (n_queries, n).

        Empty prefixes get only padding (``-1`` / ``-inf``).

        Raises
        ------
        NotFittedError
            Before ``fit``.
        ValueError
            If ``n < 1`` or an index is outside the catalogue.
        """
        sims = self._sims()
        if n < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        n_items = sims.shape[0]
        check_histories(histories, n_items, "ItemKNN")
        b = histories.n_queries
        lens = np.diff(histories.indptr)
        has = np.flatnonzero(lens > 0)
        last = histories.items[histories.indptr[1:][has] - 1].astype(np.int64)
        start, stop = sims.indptr[last], sims.indptr[last + 1]
        cnt = stop - start
        owner = np.repeat(has, cnt)
        idx = np.repeat(start, cnt) + (np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt))
        items, score = sims.indices[idx].astype(np.int64), sims.data[idx].astype(np.float64)
        if exclude_seen and len(items):
            seen_keys = np.unique(np.repeat(np.arange(b, dtype=np.int64), lens) * n_items + histories.items)
            keep = ~np.isin(owner * n_items + items, seen_keys)
            owner, items, score = owner[keep], items[keep], score[keep]
        ids = np.full((b, n), -1, dtype=np.int32)
        vals = np.full((b, n), -np.inf, dtype=np.float32)
        sel, rank = top_per_row(owner, [-score, items], n)
        ids[owner[sel], rank] = items[sel]
        vals[owner[sel], rank] = score[sel]
        return ids, vals

    def similar_items(self, item_idx: NDArray[np.int32], n: int = 20
                      ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """The ``n`` most similar items of each query item (never the item itself)."""
        q = np.asarray(item_idx, dtype=np.int32)
        return self.recommend(Histories(indptr=np.arange(len(q) + 1, dtype=np.int64), items=q), n)

    def save(self, path: Path) -> None:
        """Write ``arrays.npz`` and ``params.json`` to the directory ``path``."""
        s = self._sims()
        save_model_dir(path, "ItemKNN", self.get_params(), {
            "indptr": s.indptr, "indices": s.indices, "data": s.data, "n_items": np.array([s.shape[0]])})

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a directory written by :meth:`save` (``allow_pickle=False``)."""
        params, a = load_model_dir(path, "ItemKNN")
        model = construct_saved(cls, params, path)
        n = int(a["n_items"][0])
        model.sims_ = sp.csr_array((a["data"], a["indices"], a["indptr"]), shape=(n, n))
        return model
