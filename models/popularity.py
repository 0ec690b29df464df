"""Popularity: recommend the most frequent training items to everyone (the floor every model must beat)."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
from numpy.typing import NDArray

from models.base import Histories, InteractionLog
from models.errors import ModelFitError, NotFittedError
from models.persistence import construct_saved, load_model_dir, save_model_dir
from models.session_index import check_histories, mask_seen
from models.topk import topk

__all__ = ["Popularity"]


class Popularity:
    """Item popularity counted in training events or distinct sessions.

    Parameters
    ----------
    count : {"events", "sessions"}
        Count every event, or each item once per session.

    Attributes
    ----------
    scores_ : ndarray of shape (n_items,), float32
        Count of each item.
    """

    def __init__(self, count: str = "events") -> None:
        self.count = count

    def fit(self, log: InteractionLog) -> Self:
        """Count items in ``log``.

        Raises
        ------
        ValueError
            If ``count`` is not "events" or "sessions".
        ModelFitError
            If the log is empty.
        """
        if self.count not in ("events", "sessions"):
            raise ValueError(f"count: must be 'events' or 'sessions'; got {self.count!r}")
        if log.n_events == 0:
            raise ModelFitError("Popularity.fit: the log holds no events")
        items = log.item_idx
        if self.count == "sessions":
            items = np.unique(log.session_idx.astype(np.int64) * log.n_items + items) % log.n_items
        self.scores_ = np.bincount(items, minlength=log.n_items).astype(np.float32)
        return self

    def _scores(self) -> NDArray[np.float32]:
        if not hasattr(self, "scores_"):
            raise NotFittedError(self)
        return self.scores_

    def recommend(self, histories: Histories, n: int = 20, *, exclude_seen: bool = False
                  ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """The ``n`` most popular items for each history (ids int32, scores float32, (n_queries, n)).

        Unseen items (count 0) are never returned; ``-1`` pads.
        """
        pop = self._scores()
        check_histories(histories, len(pop), "Popularity")
        base = np.where(pop > 0, pop, -np.inf).astype(np.float32)
        if not exclude_seen:
            ids, vals = topk(base[None, :], n)
            return np.repeat(ids, histories.n_queries, 0), np.repeat(vals, histories.n_queries, 0)
        scores = np.broadcast_to(base, (histories.n_queries, len(base))).copy()
        mask_seen(scores, histories)
        return topk(scores, n)

    def similar_items(self, item_idx: NDArray[np.int32], n: int = 20
                      ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """The most popular items other than the query item itself."""
        pop = self._scores()
        q = np.asarray(item_idx, dtype=np.int64)
        hist = Histories(indptr=np.arange(len(q) + 1, dtype=np.int64), items=q.astype(np.int32))
        check_histories(hist, len(pop), "Popularity")
        return self.recommend(hist, n, exclude_seen=True)

    def save(self, path: Path) -> None:
        """Write ``arrays.npz`` and ``params.json`` to the directory ``path``."""
        save_model_dir(path, "Popularity", {"count": self.count}, {"scores": self._scores()})

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a directory written by :meth:`save` (``allow_pickle=False``)."""
        params, arrays = load_model_dir(path, "Popularity")
        model = construct_saved(cls, params, path)
        model.scores_ = arrays["scores"].astype(np.float32)
        return model
