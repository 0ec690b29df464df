"""Layout of EMDE's input sketch: which views (last item, decayed session, event types) sit where.

The input sketch is the concatenation of *views*; each view is one sketch over the input
modalities (``view_dim`` columns, the same item columns in every view, shifted by the
view's offset). Views:

- ``session``: all items of the history, decayed ``alpha ** (w * age)``;
- ``last``: the newest item only;
- ``past``: the history *without* its newest item, decayed ``alpha ** (w * age)`` with the age
  taken from the newest item of the view (the second-newest of the history), so the last gap
  never empties it. With ``views=("past", "last")``, ``norm="row"``, ``time_unit="seconds"``,
  ``alpha=0.9``, ``decay_w=0.01`` this is the official EMDE session-rec input
  (``0.9 ** (0.01 * dt)`` over real time gaps, the last item as its own view);
- ``type:<name>``: the decayed items of one event type (when the log has several);
- ``knn:session`` / ``knn:last``: the decayed session / the last item expanded to its
  co-occurrence neighbours (:mod:`models.emde.neighbours`).

The stream keeps the raw (unnormalised) sketch; the network sees every view scaled to
unit L2 norm (``norm="view"``) or every depth row of every view scaled to unit L2 norm
(``norm="row"``, the official recipe), done by :meth:`SketchLayout.normalise` for both batch and
stream input. Views that depend on the newest item only (``ITEM_VIEWS``) can be precomputed
once per item (:meth:`SketchLayout.item_sketches`), which is how training builds its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from models.base import Histories
from models.emde.neighbours import expand_to_neighbours
from models.emde.sketch import history_sketches, history_weights, last_item_sketches
from models.jit import njit_cached

__all__ = ["SketchLayout", "ITEM_VIEWS"]

ITEM_VIEWS = ("last", "knn:last")
"""Views that are a function of the newest item alone."""


@dataclass(frozen=True)
class SketchLayout:
    """Where each view of a history lives in the flat input sketch.

    Attributes
    ----------
    views : tuple of str
        View names in column order, e.g. ``("session", "last")``.
    view_dim : int
        Columns per view (sum of depth * width over input modalities).
    alpha : float
        Decay base of the ``session`` and ``type:*`` views.
    decay_w : float
        Decay rate per unit of age.
    time_unit : {"position", "seconds"}
        Age unit: positions before the newest event, or seconds (needs ``Histories.ts``).
    event_types : tuple of str
        Names of the event-type codes (views ``type:<name>`` exist only if listed in ``views``).
    norm : {"view", "row"}
        L2 normalisation unit of :meth:`normalise`: each view, or each depth row of each view.
    row_widths : tuple of int
        Width of every depth row of one view, in column order (needed by ``norm="row"``;
        their sum is ``view_dim``).

    Raises
    ------
    ValueError
        On an unknown ``norm``, or ``norm="row"`` with ``row_widths`` not summing to ``view_dim``.
    """

    views: tuple[str, ...]
    view_dim: int
    alpha: float = 0.9
    decay_w: float = 1.0
    time_unit: str = "position"
    event_types: tuple[str, ...] = ()
    norm: str = "view"
    row_widths: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.norm not in ("view", "row"):
            raise ValueError(f"norm must be 'view' or 'row'; got {self.norm!r}")
        if self.norm == "row" and sum(self.row_widths) != self.view_dim:
            raise ValueError(f"norm='row' needs row_widths summing to view_dim={self.view_dim}; "
                             f"got {sum(self.row_widths)}")

    @property
    def input_dim(self) -> int:
        return len(self.views) * self.view_dim

    def offset(self, view: str) -> int:
        """First column of ``view`` in the flat input sketch."""
        return self.views.index(view) * self.view_dim

    def raw_sketches(self, item_cols: NDArray[np.int32], histories: Histories,
                     neighbours: sp.csr_array | None = None, *, views: tuple[str, ...] | None = None
                     ) -> sp.csr_array:
        """Unnormalised input sketches of a batch of histories.

        Parameters
        ----------
        item_cols : ndarray of shape (n_items, in_depth), int32
            Item columns within one view.
        histories : Histories
        neighbours : csr_array of shape (n_items, n_items), optional
            Needed by ``knn:*`` views.
        views : tuple of str, optional
            Build only these of ``self.views`` (the others stay empty); default all.

        Returns
        -------
        csr_array of shape (n_queries, input_dim), float32

        Raises
        ------
        ValueError
            On an unknown view, or a ``knn:*`` view without ``neighbours``.
        """
        ts = histories.ts if self.time_unit == "seconds" else None
        weights = history_weights(histories.indptr, ts, self.alpha, self.decay_w)
        blocks: list[tuple[int, sp.csr_array]] = []
        for view in self.views if views is None else views:
            cols = item_cols + self.offset(view)
            if view == "session":
                m = history_sketches(cols, histories.indptr, histories.items, self.input_dim, weights)
            elif view == "past":
                lens = np.diff(histories.indptr)
                keep = np.ones(len(histories.items), bool)
                keep[histories.indptr[1:][lens > 0] - 1] = False  # drop each history's newest event
                ptr = np.concatenate([[0], np.cumsum(np.maximum(lens - 1, 0))]).astype(np.int64)
                past_w = history_weights(ptr, None if ts is None else np.asarray(ts)[keep],
                                         self.alpha, self.decay_w)
                m = history_sketches(cols, ptr, histories.items[keep], self.input_dim, past_w)
            elif view == "last":
                m = last_item_sketches(cols, histories.indptr, histories.items, self.input_dim)
            elif view.startswith("type:"):
                code = self.event_types.index(view[5:])
                et = histories.event_type
                mask = np.zeros(len(histories.items), np.float64) if et is None else (et == code)
                m = history_sketches(cols, histories.indptr, histories.items, self.input_dim,
                                     weights * mask)
            elif view in ("knn:session", "knn:last"):
                if neighbours is None:
                    raise ValueError(f"view {view!r} needs the neighbour matrix; got None")
                if view == "knn:session":
                    ptr, its, wts = histories.indptr, histories.items, weights
                else:
                    lens = np.diff(histories.indptr)
                    ptr = np.concatenate([[0], np.cumsum(lens > 0)]).astype(np.int64)
                    its = histories.items[histories.indptr[1:][lens > 0] - 1]
                    wts = np.ones(len(its))
                ptr, its, wts = expand_to_neighbours(neighbours, ptr, its, wts)
                m = history_sketches(cols, ptr, its, self.input_dim, wts)
            else:
                raise ValueError(f"unknown view {view!r}; expected session, past, last, knn:session, "
                                 f"knn:last or type:<name>")
            blocks.append((self.offset(view), sp.csr_array(m, dtype=np.float32)))
        return _join_views([m for _, m in sorted(blocks, key=lambda b: b[0])], histories.n_queries,
                           self.input_dim)

    def normalise(self, raw: sp.csr_array | NDArray[np.floating]) -> sp.csr_array:
        """Scale every view (``norm="view"``) or every depth row of every view (``norm="row"``) of
        every query to unit L2 norm (empty ones stay empty).

        Parameters
        ----------
        raw : csr_array or ndarray of shape (n_queries, input_dim)

        Returns
        -------
        csr_array of shape (n_queries, input_dim), float32

        Raises
        ------
        ValueError
            If ``raw`` has not ``input_dim`` columns.
        """
        m = sp.csr_array(raw, dtype=np.float32)
        if m.shape[1] != self.input_dim:
            raise ValueError(f"input sketches must have {self.input_dim} columns; got {m.shape[1]}")
        m.sum_duplicates()
        if self.norm == "view":
            bounds = np.array([self.view_dim], np.int64)
        else:  # every depth row of every view
            bounds = np.cumsum(self.row_widths).astype(np.int64)
        indptr = np.zeros(m.shape[0] + 1, np.int64)
        indices = np.empty(m.nnz, np.int32)
        data = np.empty(m.nnz, np.float32)
        _normalise_kernel(m.indptr.astype(np.int64, copy=False), m.indices.astype(np.int32, copy=False),
                          m.data, self.view_dim, bounds, indptr, indices, data)
        out = sp.csr_array((data[:indptr[-1]], indices[:indptr[-1]], indptr), shape=m.shape)
        out.has_sorted_indices = True
        out.has_canonical_format = True
        return out

    def input_sketches(self, item_cols: NDArray[np.int32], histories: Histories,
                       neighbours: sp.csr_array | None = None) -> sp.csr_array:
        """Normalised network input of a batch of histories (``normalise(raw_sketches(...))``)."""
        return self.normalise(self.raw_sketches(item_cols, histories, neighbours))

    @property
    def item_views(self) -> tuple[str, ...]:
        """This layout's views that depend on the newest item only (``ITEM_VIEWS``)."""
        return tuple(v for v in self.views if v in ITEM_VIEWS)

    @property
    def history_views(self) -> tuple[str, ...]:
        """This layout's other views (they depend on the whole history)."""
        return tuple(v for v in self.views if v not in ITEM_VIEWS)

    def item_sketches(self, item_cols: NDArray[np.int32], neighbours: sp.csr_array | None = None
                      ) -> sp.csr_array:
        """Normalised ``item_views`` of every item as the newest event of a history.

        Row ``i`` is the ``item_views`` part of ``input_sketches`` of any history ending in item
        ``i`` (views are normalised independently, so the parts of a history add up to its input).

        Returns
        -------
        csr_array of shape (n_items, input_dim), float32 (no entries when there are no item views)
        """
        n = len(item_cols)
        one = Histories(indptr=np.arange(n + 1, dtype=np.int64), items=np.arange(n, dtype=np.int32),
                        ts=np.zeros(n))
        return self.normalise(self.raw_sketches(item_cols, one, neighbours, views=self.item_views))

    def to_dict(self) -> dict:
        return {"views": list(self.views), "view_dim": self.view_dim, "alpha": self.alpha,
                "decay_w": self.decay_w, "time_unit": self.time_unit, "event_types": list(self.event_types),
                "norm": self.norm, "row_widths": list(self.row_widths)}

    @classmethod
    def from_dict(cls, d: dict) -> SketchLayout:
        return cls(views=tuple(d["views"]), view_dim=int(d["view_dim"]), alpha=float(d["alpha"]),
                   decay_w=float(d["decay_w"]), time_unit=str(d["time_unit"]),
                   event_types=tuple(d["event_types"]), norm=str(d.get("norm", "view")),
                   row_widths=tuple(int(w) for w in d.get("row_widths", ())))


def _join_views(blocks: list[sp.csr_array], n_queries: int, input_dim: int) -> sp.csr_array:
    """One CSR matrix from per-view blocks whose columns lie in disjoint, increasing ranges
    (each block holds one view, in column order): every row is its blocks' rows concatenated,
    so the result is canonical when every block is."""
    canonical = all(m.has_canonical_format for m in blocks)
    if not blocks:
        return sp.csr_array((n_queries, input_dim), dtype=np.float32)
    counts = [np.diff(m.indptr) for m in blocks]
    indptr = np.zeros(n_queries + 1, np.int64)
    np.cumsum(np.sum(counts, axis=0), out=indptr[1:])
    indices = np.empty(int(indptr[-1]), np.int32)
    data = np.empty(int(indptr[-1]), np.float32)
    start = indptr[:-1].copy()
    for m in blocks:
        _append_rows(m.indptr.astype(np.int64, copy=False), m.indices.astype(np.int32, copy=False),
                     m.data.astype(np.float32, copy=False), start, indices, data)
    out = sp.csr_array((data, indices, indptr), shape=(n_queries, input_dim))
    if canonical:
        out.has_sorted_indices = True
        out.has_canonical_format = True
    return out


@njit_cached(nogil=True)
def _append_rows(indptr: NDArray[np.int64], indices: NDArray[np.int32], data: NDArray[np.float32],
                 start: NDArray[np.int64], out_indices: NDArray[np.int32], out_data: NDArray[np.float32]) -> None:
    """Copy every row of one CSR block to ``start[row]`` of the output and advance ``start``."""
    for r in range(len(indptr) - 1):
        at = start[r]
        for j in range(indptr[r], indptr[r + 1]):
            out_indices[at] = indices[j]
            out_data[at] = data[j]
            at += 1
        start[r] = at


@njit_cached(nogil=True)
def _normalise_kernel(indptr: NDArray[np.int64], indices: NDArray[np.int32], data: NDArray[np.float32],
                      view_dim: int, bounds: NDArray[np.int64], out_ptr: NDArray[np.int64],
                      out_indices: NDArray[np.int32], out_data: NDArray[np.float32]) -> None:
    """Drop zeros and scale each unit (a view, or a depth row of a view: ``bounds`` are the units'
    ends within a view) of each canonical CSR row to unit L2 norm: squares summed in float64 in
    column order, each value divided in float64 and rounded once to float32."""
    nnz = 0
    for r in range(len(indptr) - 1):
        j, end = indptr[r], indptr[r + 1]
        view, u = -1, 0
        while j < end:  # one run of entries per unit; columns are sorted, so units only grow
            c = indices[j]
            if c // view_dim != view:
                view, u = c // view_dim, 0
            while c % view_dim >= bounds[u]:
                u += 1
            stop = (view * view_dim + bounds[u])  # the unit's first column past its end
            k = j
            sq = 0.0
            while k < end and indices[k] < stop:
                x = np.float64(data[k])
                sq += x * x
                k += 1
            norm = np.sqrt(sq)
            if norm <= 0.0:
                norm = 1.0
            for i in range(j, k):
                if data[i] != 0:
                    out_indices[nnz] = indices[i]
                    out_data[nnz] = np.float32(np.float64(data[i]) / norm)
                    nnz += 1
            j = k
        out_ptr[r + 1] = nnz
