"""Time-decayed item popularity of one partition, mirrored in memory for fast top-N."""

from __future__ import annotations

import msgspec
import numpy as np
from rocksdict import WriteBatch

from state import keys
from state.codec import decode_value, encode_value
from state.partition import PartitionDB

__all__ = ["ItemPopularity", "PopularityStore"]


class ItemPopularity(msgspec.Struct, array_like=True):
    """Decayed weight ``score`` as of ``last_ts`` (epoch seconds)."""

    score: float
    last_ts: float


class PopularityStore:
    """Item popularity with exponential time decay (half-life ``half_life_s`` seconds).

    ``add`` changes the in-memory mirror; ``stage`` puts the rows changed since the last call into
    a write batch (once per item and batch); ``top`` ranks at a given time.
    """

    def __init__(self, db: PartitionDB, half_life_s: float) -> None:
        self.db = db
        self.half_life_s = half_life_s
        self._rows: dict[str, ItemPopularity] = {
            keys.strip_prefix(k, keys.POPULARITY): decode_value(k, v, ItemPopularity)
            for k, v in db.scan(keys.POPULARITY)
        }
        self._changed: set[str] = set()

    def add(self, item_id: str, weight: float, ts: float) -> None:
        row = self._rows.get(item_id)
        if row is None:
            row = ItemPopularity(0.0, ts)
            self._rows[item_id] = row
        if ts >= row.last_ts:
            row.score = row.score * 0.5 ** ((ts - row.last_ts) / self.half_life_s) + weight
            row.last_ts = ts
        else:  # a late event decays to the row's time
            row.score += weight * 0.5 ** ((row.last_ts - ts) / self.half_life_s)
        self._changed.add(item_id)

    def stage(self, batch: WriteBatch) -> None:
        """Put every row changed since the last ``stage`` into ``batch``."""
        for item_id in self._changed:
            batch.put(keys.popularity_key(item_id), encode_value(self._rows[item_id]))
        self._changed.clear()

    def top(self, n: int, now_ts: float) -> tuple[list[str], np.ndarray]:
        """The ``n`` most popular items at ``now_ts``: (item ids, float32 decayed scores)."""
        if not self._rows:
            return [], np.zeros(0, dtype=np.float32)
        ids = list(self._rows)
        score = np.fromiter((r.score for r in self._rows.values()), dtype=np.float64, count=len(ids))
        last = np.fromiter((r.last_ts for r in self._rows.values()), dtype=np.float64, count=len(ids))
        # a row newer than now_ts is not grown back to now (2^(+age) overflows to inf for far-future rows)
        decayed = score * np.exp2(-np.maximum(now_ts - last, 0.0) / self.half_life_s)
        k = min(n, len(ids))
        part = np.argpartition(-decayed, k - 1)[:k]
        order = part[np.lexsort((part, -decayed[part]))]
        return [ids[i] for i in order], decayed[order].astype(np.float32)

    def __len__(self) -> int:
        return len(self._rows)
