"""SLIST: session-aware linear item-item models (Choi et al. 2021), a closed-form session recommender.

One item-item matrix ``B`` fitted in closed form on two views of the training sessions:

- SLIS (session-level item similarity): ``X`` is the (session x item) matrix; ``||X - XB||``
  asks which items occur together in a session (EASE on sessions).
- SLIT (session-level item transitions): every session is split after each position into its
  past ``S`` (the items before the split) and its future ``T`` (the items from the split on),
  each item weighted ``exp(-distance / pos_decay)`` from the split; ``||T - SB||`` asks what comes
  next.

``min_B  alpha ||W^1/2 (X - XB)||² + (1 - alpha) ||W^1/2 (T - SB)||² + lambda_ ||B||²`` with ``W``
the sessions' recency weights, solved as ``B = P (alpha XᵀWX + (1 - alpha) SᵀWT)``,
``P = (alpha XᵀWX + (1 - alpha) SᵀWS + lambda_ I)⁻¹``. A history scores item ``i`` by
``sum_j exp(-age_j / infer_decay) B[item_j, i]`` over its items, the newest with age 0.

The matrix is dense over the ``max_items`` most frequent items (time ``O(max_items³)``, memory
``O(max_items²)``); rarer items are neither scored nor used as evidence.

References
----------
M. Choi, J. Kim, J. Lee, H. Shim, J. Lee, "Session-aware Linear Item-Item Models for
Session-based Recommendation", WWW 2021, arXiv 2103.16104.
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
from models.session_index import check_histories
from models.topk import SCORE_CELLS, topk

__all__ = ["SLIST"]

_DAY_S = 86_400.0


def _add_gram(out: NDArray[np.float32], left: sp.csr_array, w: NDArray[np.float64], right: sp.csr_array,
              scale: float, block: int = 2048) -> None:
    """``out += scale * leftᵀ diag(w) right`` for sparse (rows x m) ``left`` / ``right``, in column blocks."""
    lt = sp.csr_array((left.T @ sp.diags_array(w.astype(np.float32))).astype(np.float32))
    rc = sp.csc_array(right)
    for lo in range(0, out.shape[1], block):
        hi = min(out.shape[1], lo + block)
        out[:, lo:hi] += scale * (lt @ rc[:, lo:hi]).toarray()


def _solve_spd(a: NDArray[np.float32], rhs: NDArray[np.float32]) -> NDArray[np.float32]:
    """``a⁻¹ rhs`` for symmetric positive definite ``a``, in float32 by a Cholesky factorisation (torch's LAPACK).

    ``numpy.linalg.solve`` computes in float64 (5x the memory of the inputs: 13.5 GB at 17k items), and
    scipy's bundled OpenBLAS segfaulted on a 17k x 17k ``solve``. ``a`` is overwritten by its factor.
    """
    import torch

    a_t = torch.from_numpy(a)
    torch.linalg.cholesky(a_t, out=a_t)
    return np.ascontiguousarray(torch.cholesky_solve(torch.from_numpy(rhs), a_t).numpy())  # LAPACK's is column-major


class SLIST:
    """Closed-form session-aware linear item-item model (see the module docstring).

    Parameters
    ----------
    alpha : float in [0, 1], default 0.5
        Weight of the session-similarity view (SLIS); ``1 - alpha`` goes to transitions (SLIT).
    lambda_ : float, default 1000
        L2 regularisation (> 0) added to the Gram matrix diagonal.
    pos_decay : float, default 1
        Position decay of the SLIT view: an item ``d`` positions from the split weighs ``exp(-d / pos_decay)``
        (the nearest past item and the next item weigh 1).
    infer_decay : float, default 1
        Position decay of a history at scoring: its ``k``-th newest item weighs ``exp(-k / infer_decay)``.
    session_decay_days : float, optional
        Recency of training sessions: a session that ended ``t`` days before the newest weighs
        ``exp(-t / session_decay_days)``; None weighs all alike (also when the log has no timestamps).
    window : int, default 10
        Positions on each side of a split that enter the SLIT view (``exp(-10)`` is negligible).
    max_items : int, default 20000
        The matrix covers this many of the most frequent items (ties by lower index).

    Attributes
    ----------
    weights_ : ndarray of shape (m, m), float32
        ``B`` over the covered items.
    covered_ : ndarray of shape (m,), int32
        Item indices of ``B``'s rows and columns.
    """

    def __init__(self, alpha: float = 0.5, lambda_: float = 1000.0, pos_decay: float = 1.0, infer_decay: float = 1.0,
                 session_decay_days: float | None = None, window: int = 10, max_items: int = 20_000) -> None:
        self.alpha = alpha
        self.lambda_ = lambda_
        self.pos_decay = pos_decay
        self.infer_decay = infer_decay
        self.session_decay_days = session_decay_days
        self.window = window
        self.max_items = max_items

    _PARAMS = ("alpha", "lambda_", "pos_decay", "infer_decay", "session_decay_days", "window", "max_items")

    def get_params(self) -> dict[str, float | int | None]:
        """Hyper-parameters by name."""
        return {k: getattr(self, k) for k in self._PARAMS}

    # -- fit -----------------------------------------------------------------------------------
    def fit(self, log: InteractionLog) -> Self:
        """Solve for ``B`` from the sessions of ``log`` (sorted by session, then time).

        Raises
        ------
        ValueError
            If a parameter is out of range or the log has no session of two or more events.
        """
        if not 0.0 <= self.alpha <= 1.0 or self.lambda_ <= 0 or self.pos_decay <= 0 or self.infer_decay <= 0:
            raise ValueError("SLIST: need 0 <= alpha <= 1 and lambda_, pos_decay, infer_decay > 0")
        if self.window < 1 or self.max_items < 1:
            raise ValueError("SLIST: window and max_items must be >= 1")
        counts = np.bincount(log.item_idx, minlength=log.n_items)
        order = np.lexsort((np.arange(log.n_items), -counts))
        covered = np.sort(order[: min(self.max_items, int((counts > 0).sum()))]).astype(np.int32)
        col = np.full(log.n_items, -1, np.int64)
        col[covered] = np.arange(len(covered))
        m = len(covered)
        bounds = log.session_bounds()
        lens = np.diff(bounds)
        if not (lens >= 2).any():
            raise ValueError("SLIST: the log has no session with two or more events")
        sess_w = np.ones(len(lens))
        if self.session_decay_days is not None and log.ts is not None and len(log.ts):
            end_ts = log.ts[np.maximum(bounds[1:] - 1, 0)]
            sess_w = np.exp(-(end_ts.max() - end_ts) / (self.session_decay_days * _DAY_S))
        item_col = col[log.item_idx]
        sess_of = np.repeat(np.arange(len(lens)), lens)
        ok = item_col >= 0
        x = sp.csr_array((np.ones(int(ok.sum()), np.float32), (sess_of[ok], item_col[ok])), shape=(len(lens), m))
        x.sum_duplicates()
        x.data[:] = 1.0
        # two dense float32 (m x m) matrices, accumulated by column blocks (a sparse Gram near full is 2-3x larger)
        s, t, w = self._slit_views(bounds, item_col, sess_w, m)
        a = np.zeros((m, m), np.float32)
        _add_gram(a, x, sess_w, x, self.alpha)
        _add_gram(a, s, w, s, 1.0 - self.alpha)
        a[np.diag_indices_from(a)] += self.lambda_
        rhs = np.zeros((m, m), np.float32)
        _add_gram(rhs, x, sess_w, x, self.alpha)
        _add_gram(rhs, s, w, t, 1.0 - self.alpha)
        del s, t, x
        self.weights_ = _solve_spd(a, rhs)
        self.covered_ = covered
        self.n_items_ = log.n_items
        return self

    def _slit_views(self, bounds: NDArray[np.int64], item_col: NDArray[np.int64], sess_w: NDArray[np.float64],
                    m: int) -> tuple[sp.csr_array, sp.csr_array, NDArray[np.float64]]:
        """Past ``S`` and future ``T`` (splits x covered items) and each split's session weight."""
        lens = np.diff(bounds)
        n_split = np.maximum(lens - 1, 0)
        split_sess = np.repeat(np.arange(len(lens)), n_split)
        first = np.concatenate([[0], np.cumsum(n_split)])[:-1]
        at = bounds[split_sess] + (np.arange(int(n_split.sum())) - np.repeat(first, n_split) + 1)  # first future event
        start, end = bounds[split_sess], bounds[split_sess + 1]
        rows_s, cols_s, vals_s, rows_t, cols_t, vals_t = [], [], [], [], [], []
        split = np.arange(len(at))
        for d in range(self.window):
            past = at - 1 - d
            ok = past >= start
            c = item_col[past[ok]]
            keep = c >= 0
            rows_s.append(split[ok][keep])
            cols_s.append(c[keep])
            vals_s.append(np.full(int(keep.sum()), np.exp(-d / self.pos_decay), np.float32))
            fut = at + d
            ok = fut < end
            c = item_col[fut[ok]]
            keep = c >= 0
            rows_t.append(split[ok][keep])
            cols_t.append(c[keep])
            vals_t.append(np.full(int(keep.sum()), np.exp(-d / self.pos_decay), np.float32))
        shape = (len(at), m)
        s = sp.csr_array((np.concatenate(vals_s), (np.concatenate(rows_s), np.concatenate(cols_s))), shape=shape)
        t = sp.csr_array((np.concatenate(vals_t), (np.concatenate(rows_t), np.concatenate(cols_t))), shape=shape)
        s.sum_duplicates()
        t.sum_duplicates()
        return s, t, sess_w[split_sess]

    # -- scoring -------------------------------------------------------------------------------
    def _check(self) -> None:
        if not hasattr(self, "weights_"):
            raise NotFittedError(self)

    def _history_matrix(self, histories: Histories) -> sp.csr_array:
        """(queries x covered items) float32: each item weighted ``exp(-age / infer_decay)``."""
        col = np.full(self.n_items_, -1, np.int64)
        col[self.covered_] = np.arange(len(self.covered_))
        lens = np.diff(histories.indptr)
        rows = np.repeat(np.arange(len(lens)), lens)
        age = np.repeat(histories.indptr[1:], lens) - 1 - np.arange(len(histories.items))
        c = col[np.asarray(histories.items, np.int64)]
        ok = c >= 0
        return sp.csr_array((np.exp(-age[ok] / self.infer_decay).astype(np.float32), (rows[ok], c[ok])),
                            shape=(len(lens), len(self.covered_)))

    def recommend(self, histories: Histories, n: int = 20, *, exclude_seen: bool = False
                  ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Top-``n`` items per history by ``x B`` (see :class:`models.base.Recommender`).

        Returns int32 ids / float32 scores of shape (n_queries, n), padded with -1 / -inf; items
        outside the covered set are never listed. Histories of only uncovered items get no list.

        Raises
        ------
        ValueError
            If a history holds an index outside ``[0, n_items)``.
        """
        self._check()
        check_histories(histories, self.n_items_, "SLIST")
        x = self._history_matrix(histories)
        q, m = x.shape
        ids = np.full((q, n), -1, np.int32)
        vals = np.full((q, n), -np.inf, np.float32)
        step = max(1, SCORE_CELLS // max(m, 1))
        for lo in range(0, q, step):
            hi = min(q, lo + step)
            xs = x[lo:hi]
            scores = np.asarray(xs @ self.weights_, dtype=np.float32)
            scores[np.diff(xs.indptr) == 0] = -np.inf
            if exclude_seen:
                r, c = xs.nonzero()
                scores[r, c] = -np.inf
            top, val = topk(scores, n)
            ids[lo:hi] = np.where(top >= 0, self.covered_[np.maximum(top, 0)], -1)
            vals[lo:hi] = val
        return ids, vals

    def similar_items(self, item_idx: NDArray[np.int32], n: int = 20
                      ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Items with the largest weight from each given item (itself excluded); an uncovered item gets none.

        Raises
        ------
        ValueError
            If an index lies outside ``[0, n_items)``.
        """
        self._check()
        item_idx = np.asarray(item_idx, np.int64)
        check_histories(Histories(indptr=np.arange(len(item_idx) + 1, dtype=np.int64), items=item_idx.astype(np.int32)),
                        self.n_items_, "SLIST")
        col = np.full(self.n_items_, -1, np.int64)
        col[self.covered_] = np.arange(len(self.covered_))
        c = col[item_idx]
        scores = np.where((c >= 0)[:, None], self.weights_[np.maximum(c, 0)], -np.inf).astype(np.float32)
        scores[np.flatnonzero(c >= 0), c[c >= 0]] = -np.inf
        top, val = topk(scores, n)
        return np.where(top >= 0, self.covered_[np.maximum(top, 0)], -1).astype(np.int32), val

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """``params.json`` + ``weights.npy`` + ``covered.npy`` in directory ``path``."""
        self._check()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "weights.npy", self.weights_)
        np.save(path / "covered.npy", self.covered_)
        (path / "params.json").write_text(json.dumps({"format": "fusionrec.slist", "version": 1,
                                                      "n_items": self.n_items_, **self.get_params()}))

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a directory written by :meth:`save` (no pickle).

        Raises
        ------
        ModelFormatError
            If a file is missing or the directory holds another format.
        """
        path = Path(path)
        try:
            meta = json.loads((path / "params.json").read_text(encoding="utf-8"))
            weights = np.load(path / "weights.npy", allow_pickle=False)
            covered = np.load(path / "covered.npy", allow_pickle=False)
        except FileNotFoundError as exc:
            raise ModelFormatError(f"{path}: not a SLIST model directory ({exc.filename} missing)") from exc
        except (OSError, ValueError, EOFError) as exc:  # a truncated or hand-broken file
            raise ModelFormatError(f"{path}: not a readable SLIST model directory ({type(exc).__name__}: {exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != "fusionrec.slist":
            found = meta.get("format") if isinstance(meta, dict) else meta
            raise ModelFormatError(f"{path}: format {found!r:.80}, expected 'fusionrec.slist'")
        try:
            model = cls(**{k: meta[k] for k in cls._PARAMS})
            model.weights_, model.covered_, model.n_items_ = weights, covered, int(meta["n_items"])
        except (KeyError, TypeError, ValueError) as exc:  # a parameter missing or of the wrong kind
            raise ModelFormatError(f"{path}: params.json: {type(exc).__name__}: {exc}") from exc
        return model
