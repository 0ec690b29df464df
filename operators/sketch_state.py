"""EMDE sketches inside the user state: updated per event (additive), scored in batches.

A user's raw input sketch (see ``models.emde.layout.SketchLayout``) is stored sparse in
``UserState`` as sorted int32 columns and float32 values (``sketch_cols``/``sketch_vals``),
so bytes per user grow with the distinct buckets touched, not with the sketch width.

Per event with a known item (position decay, the default ``time_unit``): decayed views
(``session``, ``type:*``) are multiplied by ``alpha ** w`` and the item's ``depth`` columns are
added; the ``last`` view is replaced by the item's columns; the neighbour views add
(``knn:session``, decayed like ``session``) or put (``knn:last``) the columns of the item's
co-occurrence neighbours, weighted ``N[item, j]`` (``models.emde.neighbours``). A user's events of one batch are
folded into a dense float32 copy (``input_dim`` floats, vectorised per view) that is stored
back sparse. Events are folded one at a time, so the float32 result is bit-identical however
the events were batched (what makes a restart after ``kill -9`` reproduce the state exactly).
It equals ``layout.raw_sketches`` of the user's whole history (tested, to float32 rounding), up
to pruning of values below ``prune_below`` (weights older than ~90 positions at alpha = 0.9).

When the model version changes, a user's sketch is rebuilt from the recent history the state
keeps, the first time the user is touched (lazy migration).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from models.base import Histories
from operators.model_version import ModelVersion
from state.users import UserState

__all__ = ["SketchUpdater", "supports_sketches"]


def supports_sketches(version: ModelVersion | None) -> bool:
    """True when the version's model scores raw EMDE sketches (has a layout and item columns) whose
    views the per-event fold supports (not EMDE's ``past`` view: such a model is scored from the
    kept history with ``recommend``)."""
    m = None if version is None else version.model
    if m is None or not all(hasattr(m, a) for a in ("layout_", "item_in_cols_", "recommend_sketches")):
        return False
    return all(v in _FOLDED or v.startswith("type:") for v in m.layout_.views)


class SketchUpdater:
    """Fold events into users' sparse sketches for one EMDE model version.

    Parameters
    ----------
    version : ModelVersion
        Its model must satisfy :func:`supports_sketches`.
    prune_below : float
        Values of decayed views below this are dropped (keeps bytes per user bounded).
    """

    def __init__(self, version: ModelVersion, prune_below: float = 1e-4) -> None:
        if not supports_sketches(version):
            raise ValueError(f"model version {version.version} has no EMDE sketch layout the stream folds")
        self.version = version
        m = version.model
        self.layout = m.layout_
        self.cols = m.item_in_cols_.astype(np.int32)
        self.prune_below = prune_below
        self.type_codes = {t: i for i, t in enumerate(self.layout.event_types)}
        self._seconds = self.layout.time_unit == "seconds"
        self._view_offsets = [(v, self.layout.offset(v)) for v in self.layout.views]
        self._offsets = np.array([o for _, o in self._view_offsets], dtype=np.int64)
        kinds = {"last": _LAST, "knn:session": _KNN, "knn:last": _KNN_LAST}
        self._kind = np.array([kinds.get(v, _PLAIN) for v, _ in self._view_offsets], dtype=np.int8)
        self.neighbours = getattr(m, "neighbours_", None)
        if (self._kind >= _KNN).any() and self.neighbours is None:
            raise ValueError(f"model version {version.version} has knn:* views but no neighbour matrix")
        if (self._kind >= _KNN).any():
            nb = sp.csr_array(self.neighbours)
            self._nb = (nb.indptr.astype(np.int64), nb.indices.astype(np.int64), nb.data.astype(np.float32),
                        int(np.diff(nb.indptr).max(initial=0)))
        else:  # no neighbour views: an empty matrix
            self._nb = (np.zeros(len(self.cols) + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), 0)
        self._adds_cache: dict[str, NDArray[np.bool_]] = {}
        self._step = np.full(256, self.layout.alpha ** self.layout.decay_w, dtype=np.float32)
        self._thr = np.float32(prune_below)

    # ----------------------------------------------------------------- per user
    def fold(self, st: UserState, items: Sequence[str], types: Sequence[str], ts: Sequence[float],
             before: UserState | None = None) -> None:
        """Add a user's new events (oldest first) to ``st``'s sketch, in place.

        If ``st`` was sketched by another model version (or never), its sketch is first rebuilt
        from the history *before* these events: ``before`` (the kept history the applier saw
        before the batch, whose cut to ``history_len`` may already have dropped part of it
        from ``st``), else the entries of ``st.items`` that precede the last ``len(items)``;
        then the new events are folded one by one. A new user therefore starts from an empty
        sketch, which keeps the result independent of batching (exactly-once replays).
        """
        if st.sketch_version != self.version.version:
            if before is None:
                cut = max(len(st.items) - len(items), 0)  # the kept history may be shorter than the new events
                before = UserState(items=st.items[:cut], ts=st.ts[:cut], types=st.types[:cut])
            else:
                before = UserState(items=list(before.items), ts=list(before.ts), types=list(before.types))
            before.sketch_version = self.version.version
            if before.items:  # a user known before this version: rebuild (lazy migration)
                self.rebuild([before])
            st.sketch_cols, st.sketch_vals = before.sketch_cols, before.sketch_vals
            st.sketch_version, st.sketch_ts = before.sketch_version, before.sketch_ts
        idx = self.version.item_index
        known = [(idx[i], t, x) for i, t, x in zip(items, types, ts) if i in idx]
        if not known:
            return
        lay = self.layout
        item_idx = [k[0] for k in known]
        if self._seconds:
            ev_ts = np.array([st.sketch_ts] + [k[2] for k in known], dtype=np.float64)
            decay = np.power(lay.alpha, lay.decay_w * np.maximum(np.diff(ev_ts), 0.0)).astype(np.float32)
        else:
            decay = self._step[: len(known)] if len(known) <= len(self._step) else np.full(
                len(known), self._step[0], dtype=np.float32)
        adds = np.stack([self._adds(k[1]) for k in known])
        cols, vals = _decode(st)
        new_cols, new_vals = _fold_kernel(
            cols, vals, np.asarray(item_idx, dtype=np.int64), self.cols, *self._nb, decay, adds, self._offsets,
            self._kind, lay.view_dim, lay.input_dim, self._thr)
        st.sketch_cols = new_cols.tobytes()
        st.sketch_vals = new_vals.tobytes()
        st.sketch_ts = float(known[-1][2])

    def _adds(self, event_type: str) -> NDArray[np.bool_]:
        """Which views an event of ``event_type`` adds to (session always, ``type:<t>`` on a match)."""
        row = self._adds_cache.get(event_type)
        if row is None:
            row = np.array([v == "session" or v == f"type:{event_type}" for v, _ in self._view_offsets])
            self._adds_cache[event_type] = row
        return row

    def rebuild(self, states: Sequence[UserState]) -> None:
        """Recompute sketches from the kept histories (one batched ``raw_sketches`` call)."""
        idx = self.version.item_index
        seqs, tss, tys = [], [], []
        for st in states:
            keep = [j for j, i in enumerate(st.items) if i in idx]
            seqs.append([idx[st.items[j]] for j in keep])
            tss.append([st.ts[j] for j in keep])
            tys.append([self.type_codes.get(st.types[j], -1) for j in keep])
        h = Histories.from_lists(seqs, tss)
        h = Histories(indptr=h.indptr, items=h.items, ts=h.ts,
                      event_type=np.array([c for t in tys for c in t], dtype=np.int8))
        raw = self.layout.raw_sketches(self.cols, h, self.neighbours)
        raw.sum_duplicates()
        for q, st in enumerate(states):
            lo, hi = raw.indptr[q], raw.indptr[q + 1]
            _encode(st, raw.indices[lo:hi].astype(np.int32), raw.data[lo:hi].astype(np.float32))
            st.sketch_ts = float(tss[q][-1]) if tss[q] else 0.0
            st.sketch_version = self.version.version

    # ----------------------------------------------------------------- batch
    def matrix(self, states: Sequence[UserState]) -> sp.csr_array:
        """The users' raw sketches as one csr_array of shape (n_users, input_dim), float32."""
        cols, vals, indptr = [], [], [0]
        for st in states:
            c, v = _decode(st)
            cols.append(c)
            vals.append(v)
            indptr.append(indptr[-1] + len(c))
        return sp.csr_array((np.concatenate(vals) if vals else np.zeros(0, np.float32),
                             np.concatenate(cols) if cols else np.zeros(0, np.int32),
                             np.asarray(indptr, dtype=np.int64)), shape=(len(states), self.layout.input_dim))


_PLAIN, _LAST, _KNN, _KNN_LAST = 0, 1, 2, 3
"""View kinds of the fold kernel: decayed item view (``session``, ``type:*``), ``last``,
decayed neighbour view (``knn:session``), last item's neighbours (``knn:last``)."""
_FOLDED = ("session", "last", "knn:session", "knn:last")
"""Views the fold kernel maintains (and ``type:*``)."""


@numba.njit(cache=True, nogil=True)
def _fold_kernel(cols, vals, items, all_cols, nb_ptr, nb_idx, nb_w, max_nb, decay, adds, offsets, kind,  # noqa: ANN001, ANN202
                 view_dim, input_dim, thr):
    """Fold k events into a sparse sketch, one event at a time (decay, prune, add), in O(k * nnz).

    cols/vals: the sorted sparse sketch; items (k,): each event's item_idx; all_cols (n_items,
    depth): item columns within a view; nb_ptr/nb_idx/nb_w: the CSR neighbour matrix N (for
    ``knn:*`` views; max_nb = its longest row); decay (k,): factor applied to decayed views
    before event i; adds (k, n_views): the decayed item views event i adds 1.0 to; kind
    (n_views,): ``_PLAIN``/``_LAST``/``_KNN``/``_KNN_LAST``. ``last`` views are replaced by the
    event's item, ``knn:last`` views by its neighbours' columns weighted ``N[item, j]``,
    ``knn:session`` views decay and add them.
    """
    depth = all_cols.shape[1]
    dense = np.zeros(input_dim, dtype=np.float32)
    active = np.zeros(input_dim, dtype=np.bool_)  # the column holds a value
    listed = np.zeros(input_dim, dtype=np.bool_)  # the column is in stack[:n] (at most once)
    per_event = (1 + max_nb) * depth * len(offsets)
    stack = np.empty(min(len(cols) + len(items) * per_event, input_dim), dtype=np.int64)
    n = 0
    for i in range(len(cols)):
        dense[cols[i]] = vals[i]
        active[cols[i]] = True
        listed[cols[i]] = True
        stack[n] = cols[i]
        n += 1
    compact_at = 2 * n + per_event
    for e in range(len(items)):
        d = decay[e]
        it = items[e]
        for a in range(n):  # every listed column decays (or is cleared) exactly once per event
            c = stack[a]
            if not active[c]:
                continue
            v = (c // view_dim)
            if kind[v] == _LAST or kind[v] == _KNN_LAST:
                dense[c] = 0.0
                active[c] = False
                continue
            x = dense[c] * d
            if x < thr:
                x = np.float32(0.0)
                active[c] = False
            dense[c] = x
        for v in range(len(offsets)):
            k = kind[v]
            if k == _PLAIN and not adds[e, v]:
                continue
            if k == _PLAIN or k == _LAST:
                for j in range(depth):
                    c = offsets[v] + all_cols[it, j]
                    if k == _LAST:
                        dense[c] = np.float32(1.0)
                    else:
                        dense[c] += np.float32(1.0)
                    active[c] = True
                    if not listed[c]:
                        listed[c] = True
                        stack[n] = c
                        n += 1
            else:
                for p in range(nb_ptr[it], nb_ptr[it + 1]):
                    nb, w = nb_idx[p], nb_w[p]
                    for j in range(depth):
                        c = offsets[v] + all_cols[nb, j]
                        dense[c] += w
                        active[c] = True
                        if not listed[c]:
                            listed[c] = True
                            stack[n] = c
                            n += 1
        if n >= compact_at:  # drop columns that hold no value any more (amortised O(1) per entry)
            m = 0
            for a in range(n):
                c = stack[a]
                if active[c]:
                    stack[m] = c
                    m += 1
                else:
                    listed[c] = False
            n = m
            compact_at = 2 * n + per_event
    m = 0
    out = np.empty(n, dtype=np.int64)
    for a in range(n):
        c = stack[a]
        if active[c]:
            out[m] = c
            m += 1
    out = np.sort(out[:m])
    return out.astype(np.int32), dense[out]


def _decode(st: UserState) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    if not st.sketch_cols:
        return np.zeros(0, np.int32), np.zeros(0, np.float32)
    return np.frombuffer(st.sketch_cols, dtype=np.int32), np.frombuffer(st.sketch_vals or b"", dtype=np.float32)


def _encode(st: UserState, cols: NDArray[np.int32], vals: NDArray[np.float32]) -> None:
    st.sketch_cols = cols.astype("<i4").tobytes()
    st.sketch_vals = vals.astype("<f4").tobytes()
