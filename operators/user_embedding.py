"""The inductive user embedding M′·Q in the user state, from the version's Cleora item embeddings.

A user is a new node of the session–item graph whose edges go to the items of its history;
Cleora's inductive step gives it ``rowL2(M′·Q)``. With M′'s row = decayed event weights, the
unnormalised sum ``e ← alpha · e + Q[item]`` is updated per event in O(dim) and normalised when
read (:func:`user_vectors`). Events are folded one at a time (batch-invariant, like the sketches);
a user first seen by a version starts from its kept history *before* the batch (``before``,
captured by the applier before the batch cut the history to ``history_len``), so folding 60
events as one batch or as several gives bit-identical bytes (what ``kill -9`` recovery needs).

Stored as raw float32 (``UserState.embedding``, ``dim * 4`` bytes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from operators.model_version import ModelVersion
from state.users import UserState

__all__ = ["EmbeddingUpdater", "user_vectors"]


class EmbeddingUpdater:
    """Fold events into users' M′·Q embeddings for one model version with Cleora item vectors.

    Parameters
    ----------
    version : ModelVersion
        Must carry ``item_vectors`` (float32, one row per item_idx).
    alpha : float
        Per-event decay of older events' weight (in (0, 1]).
    """

    def __init__(self, version: ModelVersion, alpha: float = 0.9) -> None:
        if version.item_vectors is None:
            raise ValueError(f"model version {version.version} has no Cleora item vectors")
        self.version = version
        self.q = version.item_vectors
        self.alpha = np.float32(alpha)

    def fold(self, st: UserState, items: Sequence[str], types: Sequence[str], ts: Sequence[float],
             before: Sequence[str] | None = None) -> None:
        """Add a user's new events (oldest first) to its embedding, in place.

        Parameters
        ----------
        st : UserState
            The user after the batch (``st.items`` may already be cut to ``history_len``).
        items, types, ts : sequences of equal length
            The batch's new events of this user, oldest first (``types``/``ts`` unused here;
            same call shape as ``SketchUpdater.fold``).
        before : sequence of str, optional
            The user's kept items before the batch. Used only when ``st``'s embedding is of
            another version (or none): the embedding is rebuilt from them first. Without it,
            the items of ``st.items`` that precede the new ones are used (never the new ones
            twice, even when the batch is longer than the kept history).
        """
        dim = self.q.shape[1]
        if st.embedding_version != self.version.version:
            e = np.zeros(dim, dtype=np.float32)
            if before is None:
                before = st.items[: max(len(st.items) - len(items), 0)]
            self._add(e, before)
            st.embedding_version = self.version.version
        else:
            e = np.frombuffer(st.embedding, dtype=np.float32).copy() if st.embedding else np.zeros(dim, np.float32)
        self._add(e, items)
        st.embedding = e.astype("<f4").tobytes()

    def _add(self, e: NDArray[np.float32], items: Sequence[str]) -> None:
        idx = self.version.item_index
        for item_id in items:
            j = idx.get(item_id)
            if j is not None:
                e *= self.alpha
                e += self.q[j]


def user_vectors(states: Sequence[UserState], dim: int) -> NDArray[np.float32]:
    """Row-L2-normalised user embeddings, shape (len(states), dim), zeros where none."""
    out = np.zeros((len(states), dim), dtype=np.float32)
    for i, st in enumerate(states):
        if st.embedding:
            out[i] = np.frombuffer(st.embedding, dtype=np.float32)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norm, out=out, where=norm > 0)
