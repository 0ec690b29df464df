"""The session-neighbourhood engine behind SKNN, V-SKNN, STAN and V-STAN, vectorised over a batch.

For a batch of prefixes it (1) finds every training session sharing an item with each prefix
with one sparse product ``Q @ X.T``, (2) keeps the ``sample_size`` most recent (or random) of
them (sessions are indexed newest first, so this is each row's head), (3) scores their
similarity, (4) keeps the ``k`` most similar per prefix (:mod:`models.ragged_topk`) and (5)
spreads each neighbour's weight over its items: one sparse product ``N @ X`` when the weight
factors into (neighbour) x (item) as in SKNN/V-SKNN, else per-entry weights summed by a COO->CSR
conversion (STAN/V-STAN). No step loops in Python over sessions or items. Subclasses define the
similarity (:meth:`SessionKNNBase._similarity`) and either :meth:`SessionKNNBase._pair_weights`
(+ ``_item_factor``) or :meth:`SessionKNNBase._entry_weights`.

References
----------
Ludewig, Latifi, Jannach, "Empirical analysis of session-based recommendation algorithms",
UMUAI 2021; github.com/rn5l/session-rec ``algorithms/knn/``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Self

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from models.base import Histories, InteractionLog
from models.errors import ModelFitError, NotFittedError
from models.persistence import load_model_dir, save_model_dir
from models.ragged_topk import select_per_row, top_per_row
from models.session_index import SessionIndex, check_histories

__all__ = ["SessionKNNBase", "QueryItems", "expand_rows", "day_window"]

_DAY_S = 86_400.0
_ENTRY_BUDGET = 2_000_000
"""Neighbour entries (sessions x their items) materialised per chunk, roughly."""


def expand_rows(indptr: NDArray[np.int64], rows: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Entries of CSR rows ``rows``: (owner position in ``rows``, index into ``indices``), contiguous per row."""
    start = indptr[rows]
    lens = indptr[rows + 1] - start
    total = int(lens.sum())
    owner = np.repeat(np.arange(len(rows), dtype=np.int64), lens)
    offsets = np.repeat(np.cumsum(lens) - lens, lens)
    return owner, np.repeat(start, lens) + (np.arange(total, dtype=np.int64) - offsets)


class QueryItems:
    """The distinct (prefix, item) pairs of a batch, searchable, with each item's newest position.

    Attributes
    ----------
    rows, items : ndarray of shape (n_pairs,), int64
        Sorted by (row, item).
    last_pos : ndarray of shape (n_pairs,), float64
        Newest 1-based position of the item in its prefix (positions count duplicates).
    length : ndarray of shape (n_queries,), int64
        Prefix lengths with duplicates (session-rec's ``len(session_items)``).
    n_unique : ndarray of shape (n_queries,), int64
        Distinct items per prefix.
    now : ndarray of shape (n_queries,), float64
        Epoch seconds of the newest event of each prefix (``default_now`` when unknown).
    """

    def __init__(self, hist: Histories, n_items: int, default_now: float) -> None:
        self.n_items = n_items
        self.length = np.diff(hist.indptr).astype(np.int64)
        b = len(self.length)
        row = np.repeat(np.arange(b, dtype=np.int64), self.length)
        pos = np.arange(len(row), dtype=np.int64) - np.repeat(hist.indptr[:-1], self.length) + 1
        key = row * n_items + hist.items.astype(np.int64)
        order = np.lexsort((pos, key))
        k_sorted = key[order]
        last = np.ones(len(order), dtype=bool)
        last[:-1] = k_sorted[1:] != k_sorted[:-1]
        self.keys = k_sorted[last]
        self.rows = self.keys // n_items
        self.items = self.keys % n_items
        self.last_pos = pos[order][last].astype(np.float64)
        self.n_unique = np.bincount(self.rows, minlength=b).astype(np.int64)
        self.now = np.full(b, default_now, dtype=np.float64)
        if hist.ts is not None:
            has = self.length > 0
            self.now[has] = hist.ts[hist.indptr[1:][has] - 1]

    @property
    def n_queries(self) -> int:
        return int(len(self.length))

    def find(self, rows: NDArray[np.int64], items: NDArray[np.integer]) -> NDArray[np.int64]:
        """Index into the pairs of each (row, item), ``-1`` when the item is not in that prefix."""
        key = rows * self.n_items + items.astype(np.int64)
        pos = np.searchsorted(self.keys, key)
        pos_c = np.minimum(pos, max(len(self.keys) - 1, 0))
        if not len(self.keys):
            return np.full(len(key), -1, dtype=np.int64)
        return np.where(self.keys[pos_c] == key, pos_c, -1)

    def matrix(self, values: NDArray[np.floating] | None = None) -> sp.csr_array:
        """(n_queries, n_items) sparse matrix of the pairs (values default to 1)."""
        v = np.ones(len(self.keys), dtype=np.float64) if values is None else values
        return sp.csr_array((v, (self.rows, self.items)), shape=(self.n_queries, self.n_items))


class SessionKNNBase:
    """Shared fit / recommend / save of the session-kNN family (see the module docstring).

    Subclasses take at least ``k``, ``sample_size``, ``sampling`` and ``random_state`` and
    implement ``_similarity`` and ``_pair_weights`` or ``_entry_weights`` (``_validate``,
    ``_query_weights``, ``_item_factor`` and ``_train_window`` are optional).
    """

    _chunk: int = 256
    """Prefixes scored at once inside ``recommend`` (bounds memory)."""
    _positive_only: bool = True
    """Drop neighbours with similarity <= 0 (session-rec's ``if similarity > 0``)."""

    k: int
    sample_size: int
    sampling: str
    random_state: int | None

    # ---- hooks ---------------------------------------------------------------------------
    def _validate(self) -> None:
        if self.k < 1:
            raise ValueError(f"k: must be >= 1; got {self.k}")
        if self.sample_size < 0:
            raise ValueError(f"sample_size: must be >= 0 (0 = all candidates); got {self.sample_size}")
        if self.sampling not in ("recent", "random"):
            raise ValueError(f"sampling: must be 'recent' or 'random'; got {self.sampling!r}")

    def _train_window(self, log: InteractionLog) -> InteractionLog:
        return log

    def _query_weights(self, q: QueryItems) -> NDArray[np.float64] | None:
        """Weight of each (prefix, item) pair of ``q`` whose sum over shared items the similarity needs."""
        return None

    def _similarity(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64],
                    overlap: NDArray[np.float64], num: NDArray[np.float64] | None) -> NDArray[np.float64]:
        """Similarity of each (row, session) candidate; ``overlap`` = shared item count, ``num`` =
        sum of ``_query_weights`` over shared items (None when there are no weights)."""
        raise NotImplementedError

    def _pair_weights(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64],
                      sim: NDArray[np.float64]) -> NDArray[np.float64] | None:
        """Separable models: the weight a neighbour pair gives each of its items (times
        ``_item_factor``); None when the weight depends on the (pair, item) entry."""
        return None

    def _item_factor(self) -> NDArray[np.float64] | None:
        """Per-item multiplier of separable models (e.g. the IDF boost); None = 1."""
        return None

    def _entry_weights(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64],
                       sim: NDArray[np.float64], owner: NDArray[np.int64], entry: NDArray[np.int64]
                       ) -> NDArray[np.float64]:
        """Non-separable models: the weight of each neighbour entry (``entry`` indexes ``x``)."""
        raise NotImplementedError

    # ---- the estimator contract ----------------------------------------------------------
    def get_params(self) -> dict[str, object]:
        """Constructor arguments as stored (scikit-learn's rule)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def fit(self, log: InteractionLog) -> Self:
        """Index the training sessions of ``log``.

        Raises
        ------
        ValueError
            If a hyper-parameter is invalid (the message names it).
        ModelFitError
            If the log (after ``last_n_days``) holds no events.
        """
        self._validate()
        log = self._train_window(log)
        if log.n_events == 0:
            raise ModelFitError(f"{type(self).__name__}.fit: the log holds no events")
        index = SessionIndex.from_log(log)
        counts = np.bincount(log.item_idx, minlength=log.n_items).astype(np.float64)
        idf = np.where(counts > 0, np.log(index.n_sessions / np.maximum(counts, 1.0)), 0.0)
        self._set_state(index, idf, np.random.default_rng(self.random_state).random(index.n_sessions),
                        float(log.ts.max()))
        return self

    def _set_state(self, index: SessionIndex, idf: NDArray, rand_key: NDArray, now: float) -> None:
        self.index_ = index
        self.n_items_ = int(index.x.shape[1])
        self.idf_ = np.asarray(idf, dtype=np.float64)
        self.rand_key_ = np.asarray(rand_key, dtype=np.float64)
        self.now_ = now

    def _chunk_size(self) -> int:
        """Prefixes per chunk, fewer when neighbour sessions are long (bounds the entry arrays)."""
        k_eff = min(self.k, self.sample_size) if self.sample_size > 0 else self.k
        mean_len = float(self.index_.x.nnz) / max(self.index_.n_sessions, 1)
        return int(np.clip(_ENTRY_BUDGET / max(k_eff * mean_len, 1.0), 8, self._chunk))

    def _check_fitted(self) -> None:
        if not hasattr(self, "index_"):
            raise NotFittedError(self)

    def recommend(self, histories: Histories, n: int = 20, *, exclude_seen: bool = False
                  ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Top-``n`` items for each prefix from its session neighbourhood.

        Parameters
        ----------
        histories : Histories
            Prefixes (item indices, oldest first; ``ts`` in epoch seconds used by time decays,
            else the end of train is "now").
        n : int
            List length, >= 1.
        exclude_seen : bool
            Drop the prefix's own items.

        Returns
        -------
        (ids, scores) : int32 and float32 arrays of shape (n_queries, n), best first; items no
        neighbour holds are not recommended (``-1`` / ``-inf`` padding). Ties go to the lower index.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        ValueError
            If ``n < 1`` or a history holds an index outside the catalogue.
        """
        self._check_fitted()
        if n < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        check_histories(histories, self.n_items_, type(self).__name__)
        b = histories.n_queries
        ids = np.full((b, n), -1, dtype=np.int32)
        vals = np.full((b, n), -np.inf, dtype=np.float32)
        chunk = self._chunk_size()
        for lo in range(0, b, chunk):
            hi = min(lo + chunk, b)
            a, z = histories.indptr[lo], histories.indptr[hi]
            sub = Histories(indptr=histories.indptr[lo:hi + 1] - a, items=histories.items[a:z],
                            ts=None if histories.ts is None else histories.ts[a:z])
            self._recommend_chunk(sub, n, exclude_seen, ids[lo:hi], vals[lo:hi])
        return ids, vals

    def _recommend_chunk(self, hist: Histories, n: int, exclude_seen: bool,
                         ids: NDArray[np.int32], vals: NDArray[np.float32]) -> None:
        q = QueryItems(hist, self.n_items_, self.now_)
        rows, sess, sim = self._neighbours(q)
        pair_w = self._pair_weights(q, rows, sess, sim)
        if pair_w is not None:  # separable: one sparse product spreads the pair weights over items
            nmat = sp.csr_array((pair_w, (rows, sess)), shape=(q.n_queries, self.index_.n_sessions))
            s = (nmat @ self.index_.x).tocsr()
        else:  # entry weights summed per (prefix, item) by the COO -> CSR conversion
            owner, entry = expand_rows(self.index_.x.indptr, sess)
            w = self._entry_weights(q, rows, sess, sim, owner, entry)
            s = sp.csr_array((w, (rows[owner], self.index_.x.indices[entry])), shape=(q.n_queries, self.n_items_))
        s.sum_duplicates()
        r = np.repeat(np.arange(q.n_queries, dtype=np.int64), np.diff(s.indptr))
        it = s.indices.astype(np.int64)
        score = s.data.astype(np.float64)
        factor = self._item_factor()
        if factor is not None:
            score = score * factor[it]
        keep = score > 0
        if exclude_seen or not getattr(self, "remind", True):
            keep &= q.find(r, it) < 0
        r, it, score = r[keep], it[keep], score[keep]
        sel, rank = top_per_row(r, [-score, it], n)
        ids[r[sel], rank] = it[sel]
        vals[r[sel], rank] = score[sel]

    def _shared(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64]
                ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
        """Every item a neighbour pair shares with its prefix: (pair index, newest position of the
        item in the prefix, newest position in the neighbour session).

        Walks either the neighbours' items or the sessions of the prefix items, whichever is
        fewer entries (long baskets vs. popular items).
        """
        ix = self.index_
        cost_sessions = int(np.diff(ix.x.indptr)[sess].sum())
        cost_items = int(np.diff(ix.xt.indptr)[q.items].sum())
        if cost_sessions <= cost_items:
            owner, entry = expand_rows(ix.x.indptr, sess)
            qi = q.find(rows[owner], ix.x.indices[entry])
            hit = qi >= 0
            return owner[hit], q.last_pos[qi[hit]], ix.last_pos[entry[hit]].astype(np.float64)
        owner, entry = expand_rows(ix.xt.indptr, q.items)
        n_s = ix.n_sessions
        pair_key = rows * n_s + sess
        order = np.argsort(pair_key)
        key = q.rows[owner] * n_s + ix.xt.indices[entry].astype(np.int64)
        pos = np.searchsorted(pair_key[order], key)
        pos_c = np.minimum(pos, max(len(order) - 1, 0))
        hit = (pos < len(order)) & (pair_key[order][pos_c] == key) if len(order) else np.zeros(len(key), bool)
        return order[pos_c[hit]], q.last_pos[owner[hit]], ix.xt_last_pos[entry[hit]].astype(np.float64)

    def _newest_shared(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64]
                       ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per pair: newest prefix position of a shared item, and its neighbour-side counterpart
        ``p*`` (newest position in the neighbour of an item shared with the prefix)."""
        pair, q_pos, s_pos = self._shared(q, rows, sess)
        newest_q = np.zeros(len(sess))
        p_star = np.zeros(len(sess))
        np.maximum.at(newest_q, pair, q_pos)
        np.maximum.at(p_star, pair, s_pos)
        return newest_q, p_star

    def _neighbours(self, q: QueryItems) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
        """(row, session, similarity) of the ``k`` nearest sampled neighbours of each prefix."""
        xt = self.index_.xt
        c = (q.matrix() @ xt).tocsr()
        c.sort_indices()
        rows = np.repeat(np.arange(q.n_queries, dtype=np.int64), np.diff(c.indptr))
        sess = c.indices.astype(np.int64)
        overlap = c.data.astype(np.float64)
        w = self._query_weights(q)
        num = None
        if w is not None and len(w) and np.all(w > 0):
            cw = (q.matrix(w) @ xt).tocsr()
            cw.sort_indices()
            if cw.nnz == c.nnz:  # positive weights: the same pattern, so entries align
                num = cw.data.astype(np.float64)
        if self.sample_size > 0:
            if self.sampling == "recent":  # sessions are indexed newest first: keep each row's head
                sel = np.flatnonzero(np.arange(len(rows)) - c.indptr[rows] < self.sample_size)
            else:
                sel = select_per_row(rows, [self.rand_key_[sess], sess], self.sample_size)
            rows, sess, overlap = rows[sel], sess[sel], overlap[sel]
            num = None if num is None else num[sel]
        if w is not None and num is None:
            num = self._weighted_overlap(q, rows, sess, w)
        sim = self._similarity(q, rows, sess, overlap, num)
        if self._positive_only:
            ok = sim > 0
            rows, sess, sim = rows[ok], sess[ok], sim[ok]
        sel = select_per_row(rows, [-sim, sess], self.k)
        return rows[sel], sess[sel], sim[sel]

    def _weighted_overlap(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64],
                          weights: NDArray[np.float64]) -> NDArray[np.float64]:
        """For each (row, session) pair, the sum of ``weights`` (one per query pair) of shared items."""
        owner, entry = expand_rows(self.index_.x.indptr, sess)
        qi = q.find(rows[owner], self.index_.x.indices[entry])
        hit = qi >= 0
        return np.bincount(owner[hit], weights=weights[qi[hit]], minlength=len(sess))

    def similar_items(self, item_idx: NDArray[np.int32], n: int = 20
                      ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Items recommended after a one-item session ``[i]`` (the item itself excluded)."""
        q = np.asarray(item_idx, dtype=np.int32)
        hist = Histories(indptr=np.arange(len(q) + 1, dtype=np.int64), items=q)
        return self.recommend(hist, n, exclude_seen=True)

    def save(self, path: Path) -> None:
        """Write ``arrays.npz`` (session index, idf, sampling keys) and ``params.json`` to ``path``."""
        self._check_fitted()
        ix = self.index_
        save_model_dir(path, type(self).__name__, self.get_params(), {
            "indptr": ix.x.indptr, "indices": ix.x.indices, "last_pos": ix.last_pos, "last_ts": ix.last_ts,
            "idf": self.idf_, "rand_key": self.rand_key_, "now": np.array([self.now_]),
            "n_items": np.array([self.n_items_]),
        })

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a directory written by :meth:`save` (``allow_pickle=False``)."""
        params, a = load_model_dir(path, cls.__name__)
        model = cls(**params)
        index = SessionIndex.from_arrays(a["indptr"], a["indices"], a["last_pos"], a["last_ts"], int(a["n_items"][0]))
        model._set_state(index, a["idf"], a["rand_key"], float(a["now"][0]))
        return model


def day_window(log: InteractionLog, days: float | None) -> InteractionLog:
    """Events from midnight (UTC) ``days`` days before the last day of ``log`` on (session-rec ``last_n_days``)."""
    if days is None:
        return log
    last_day = np.floor(log.ts.max() / _DAY_S) * _DAY_S
    keep = log.ts >= last_day - days * _DAY_S
    sess = log.session_idx[keep]
    _, remap = np.unique(sess, return_inverse=True)
    return InteractionLog(session_idx=remap.astype(np.int32), item_idx=log.item_idx[keep], ts=log.ts[keep],
                          n_items=log.n_items, item_ids=log.item_ids)
