"""Nearest neighbours in a vector modality of the catalog (cosine, exact, numpy).

Items may carry a dense vector attribute (image embedding or any other modality). Rows are
L2-normalised when set, into one growing float32 matrix (no copy per catalog change). A query
is one matrix-vector product and an ``argpartition``.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray

from models.topk import topk

__all__ = ["VectorIndex"]

log = logging.getLogger(__name__)


class VectorIndex:
    """item_id -> unit vector; ``similar(item_id, n)`` by cosine similarity.

    Parameters
    ----------
    dim : int or None
        Vector length; taken from the first vector when None. Vectors of another length are
        refused (logged, the item is left out).
    """

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self._row: dict[str, int] = {}
        self._ids: list[str] = []
        # rows in one growing float32 buffer (capacity doubles): ~dim * 4 bytes per item, where a list
        # of per-item arrays cost ~110 bytes more each and a vstack copy of the whole matrix per change
        self._buf: NDArray[np.float32] | None = None
        self._live_buf = np.zeros(0, dtype=bool)
        self._n_live = 0
        self._dead: NDArray[np.intp] | None = None  # rows not live, kept until a row changes liveness

    def __len__(self) -> int:
        return self._n_live

    def set(self, item_id: str, vector: object) -> bool:
        """Insert or replace an item's vector; False (and logged) if it is not a finite vector of ``dim``."""
        try:
            v = np.asarray(vector, dtype=np.float32).ravel()
        except (TypeError, ValueError):
            log.warning("item %r: vector is not numeric; left out of visual similarity", item_id)
            return False
        if self.dim is None and v.size:
            self.dim = int(v.size)
        norm = float(np.linalg.norm(v)) if v.size else 0.0
        if v.size != self.dim or not np.isfinite(norm) or norm == 0.0:
            log.warning("item %r: vector must be %s finite non-zero floats; got %d values", item_id, self.dim, v.size)
            self.delete(item_id)
            return False
        row = self._row.get(item_id)
        if row is None:
            row = self._row[item_id] = len(self._ids)
            self._ids.append(item_id)
            self._grow(row + 1)
        buf = self._buf
        assert buf is not None
        buf[row] = v / norm
        if not self._live_buf[row]:
            self._live_buf[row] = True
            self._n_live += 1
            self._dead = None
        return True

    def _grow(self, rows: int) -> None:
        """Room for ``rows`` rows (capacity doubled, so n inserts copy O(n) rows in all)."""
        cap = 0 if self._buf is None else len(self._buf)
        if rows <= cap:
            return
        new_cap = max(rows, 2 * cap, 64)
        buf = np.zeros((new_cap, self.dim or 0), dtype=np.float32)
        live = np.zeros(new_cap, dtype=bool)
        if self._buf is not None:
            buf[:cap] = self._buf
            live[:cap] = self._live_buf
        self._buf, self._live_buf = buf, live

    def delete(self, item_id: str) -> None:
        row = self._row.get(item_id)
        if row is not None and self._live_buf[row]:
            self._live_buf[row] = False
            self._n_live -= 1
            self._dead = None

    @property
    def ids(self) -> list[str]:
        """item_id of each row (rows are never reused: an id keeps its row while the index lives)."""
        return self._ids

    def similar_rows(self, item_id: str, n: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """As ``similar``, with rows (``ids[row]`` is the item_id) instead of ids: no string per item."""
        row = self._row.get(item_id)
        if row is None or not self._live_buf[row]:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        n_rows = len(self._ids)
        matrix = self._buf[:n_rows]  # type: ignore[index]  # a view: no copy
        scores = matrix @ matrix[row]
        if self._dead is None or (len(self._dead) and self._dead[-1] >= n_rows):
            self._dead = np.flatnonzero(~self._live_buf[:n_rows])
        scores[self._dead] = -np.inf  # usually few rows: no pass over a mask of every row
        scores[row] = -np.inf
        idx, val = topk(scores[None, :], n)
        keep = idx[0] >= 0
        return idx[0][keep], val[0][keep]

    def similar(self, item_id: str, n: int) -> tuple[list[str], NDArray[np.float32]]:
        """The ``n`` items with the most similar vectors (the item itself excluded), best first.

        Returns ``([], empty)`` when the item has no vector.
        """
        rows, val = self.similar_rows(item_id, n)
        return [self._ids[i] for i in rows], val
