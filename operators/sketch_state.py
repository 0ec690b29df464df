"""EMDE sketches inside the user state: updated per event (additive), scored in batches.

A user's raw input sketch (see ``models.emde.layout.SketchLayout``) is stored sparse in
``UserState`` as sorted int32 columns and float32 values (``sketch_cols``/``sketch_vals``),
so bytes per user grow with the distinct buckets touched, not with the sketch width.

Per event with a known item (position decay, the default ``time_unit``): decayed views
(``session``, ``type:*``) are multiplied by ``alpha ** w`` and the item's ``depth`` columns are
added (a sorted merge, O(nnz) memory moves, no sort); the ``last`` view is replaced by the
item's columns. Events are folded one at a time, so the float32 result is bit-identical however
the events were batched (what makes a restart after ``kill -9`` reproduce the state exactly).
It equals ``layout.raw_sketches`` of the user's whole history (tested, to float32 rounding), up
to pruning of values below ``prune_below`` (weights older than ~90 positions at alpha = 0.9).

When the model version changes, a user's sketch is rebuilt from the recent history the state
keeps, the first time the user is touched (lazy migration).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from models.base import Histories
from operators.model_version import ModelVersion
from state.users import UserState

__all__ = ["SketchUpdater", "supports_sketches"]


def supports_sketches(version: ModelVersion | None) -> bool:
    """True when the version's model scores raw EMDE sketches (has a layout and item columns)."""
    m = None if version is None else version.model
    return m is not None and all(hasattr(m, a) for a in ("layout_", "item_in_cols_", "recommend_sketches"))


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
            raise ValueError(f"model version {version.version} has no EMDE sketch layout")
        self.version = version
        m = version.model
        self.layout = m.layout_
        self.cols = m.item_in_cols_.astype(np.int32)
        self.prune_below = prune_below
        self.type_codes = {t: i for i, t in enumerate(self.layout.event_types)}
        self._decayed = np.zeros(self.layout.input_dim, dtype=bool)
        for v in self.layout.views:
            if v != "last":
                o = self.layout.offset(v)
                self._decayed[o:o + self.layout.view_dim] = True
        self._seconds = self.layout.time_unit == "seconds"

    # ----------------------------------------------------------------- per user
    def fold(self, st: UserState, items: Sequence[str], types: Sequence[str], ts: Sequence[float]) -> None:
        """Add a user's new events (oldest first) to ``st``'s sketch, in place.

        If ``st`` was sketched by another model version, rebuild from its kept history instead
        (the new events are already part of ``st.items``).
        """
        if st.sketch_version != self.version.version:
            self.rebuild([st])
            return
        idx = self.version.item_index
        cols, vals = _decode(st)
        cols, vals = cols.copy(), vals.copy()
        lay = self.layout
        step = np.float32(lay.alpha ** lay.decay_w)
        last_ts = st.sketch_ts
        for item_id, type_, ts_ in zip(items, types, ts):
            j = idx.get(item_id)
            if j is None:
                continue
            # one event at a time, so the result does not depend on how events were batched
            decay = np.float32(lay.alpha ** (lay.decay_w * max(ts_ - last_ts, 0.0))) if self._seconds else step
            decayed = self._decayed[cols]
            vals[decayed] *= decay
            for view in lay.views:
                off = lay.offset(view)
                if view == "last":
                    in_view = (cols >= off) & (cols < off + lay.view_dim)
                    cols, vals = cols[~in_view], vals[~in_view]
                    cols, vals = _merge(cols, vals, self.cols[j] + off)
                elif view == "session" or view == f"type:{type_}":
                    cols, vals = _merge(cols, vals, self.cols[j] + off)
            keep = ~self._decayed[cols] | (vals >= self.prune_below)
            cols, vals = cols[keep], vals[keep]
            last_ts = ts_
        _encode(st, cols, vals)
        st.sketch_ts = float(last_ts)

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
        raw = self.layout.raw_sketches(self.cols, h)
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


def _merge(cols: NDArray[np.int32], vals: NDArray[np.float32], new: NDArray[np.int32]
           ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """Add 1.0 at the (distinct) columns ``new`` of a sorted sparse vector."""
    new = np.sort(new.astype(np.int32))
    pos = np.searchsorted(cols, new)
    hit = pos < len(cols)
    hit[hit] = cols[pos[hit]] == new[hit]
    vals[pos[hit]] += np.float32(1.0)
    miss = ~hit
    return np.insert(cols, pos[miss], new[miss]), np.insert(vals, pos[miss], np.float32(1.0))


def _decode(st: UserState) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    if not st.sketch_cols:
        return np.zeros(0, np.int32), np.zeros(0, np.float32)
    return np.frombuffer(st.sketch_cols, dtype=np.int32), np.frombuffer(st.sketch_vals or b"", dtype=np.float32)


def _encode(st: UserState, cols: NDArray[np.int32], vals: NDArray[np.float32]) -> None:
    st.sketch_cols = cols.astype("<i4").tobytes()
    st.sketch_vals = vals.astype("<f4").tobytes()
