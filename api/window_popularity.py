"""Item popularity over a sliding time window ("top products of the last 24 h"), from the events topic.

Weights (the event type's weight from settings) are summed into time buckets of ``bucket_s``;
a window of ``w`` seconds sums the buckets that end after ``clock - w``, where ``clock`` is the
newest event time seen (so a replayed log has windows too, not only a live shop). Buckets older
than ``horizon_s`` are dropped. Rankings are cached per window for ``cache_s`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import numpy as np

__all__ = ["WindowPopularity"]


class WindowPopularity:
    """Bucketed item weights; ``top(window_s)`` ranks items by their sum over the window.

    Parameters
    ----------
    bucket_s : float
        Bucket width, seconds.
    horizon_s : float
        Longest window served; older buckets are dropped.
    cache_s : float
        How long a ranking is reused (wall clock).
    """

    def __init__(self, bucket_s: float = 3600.0, horizon_s: float = 30 * 86400.0, cache_s: float = 1.0) -> None:
        self.bucket_s, self.horizon_s, self.cache_s = bucket_s, horizon_s, cache_s
        self.clock = 0.0
        self._buckets: dict[int, dict[str, float]] = defaultdict(dict)
        self._cache: dict[float, tuple[float, list[str], np.ndarray]] = {}
        self._lock = threading.Lock()
        self._dirty: set[tuple[int, str]] = set()  # (bucket, item) changed since ``take_dirty``
        self._dropped: set[int] = set()  # buckets dropped since ``take_dirty``
        self._refreshing: set[float] = set()  # windows being re-ranked in the background

    def add(self, item_ids: list[str], weight: float, ts: float) -> None:
        """Count ``weight`` for each of ``item_ids`` at event time ``ts`` (epoch s)."""
        if weight <= 0 or not item_ids:
            return
        b = int(ts // self.bucket_s)
        with self._lock:
            bucket = self._buckets[b]
            for i in item_ids:
                bucket[i] = bucket.get(i, 0.0) + weight
                self._dirty.add((b, i))
            if ts > self.clock:
                oldest = int((ts - self.horizon_s) // self.bucket_s)
                if self.clock == 0.0 or oldest > int((self.clock - self.horizon_s) // self.bucket_s):
                    for old in [k for k in self._buckets if k < oldest]:
                        del self._buckets[old]
                        self._dropped.add(old)
                self.clock = ts

    def take_dirty(self) -> tuple[dict[tuple[int, str], float], set[int], float]:
        """What changed since the last call: ((bucket, item) -> weight, dropped buckets, clock) (for snapshots)."""
        with self._lock:
            # a bucket dropped and re-created by an older event since then no longer holds the item
            changed = {(b, i): self._buckets[b][i] for b, i in self._dirty if i in self._buckets.get(b, ())}
            dropped = self._dropped
            self._dirty, self._dropped = set(), set()
            return changed, dropped, self.clock

    def weights(self) -> dict[tuple[int, str], float]:
        """Every (bucket, item) weight held (a full snapshot)."""
        with self._lock:
            return {(b, i): w for b, bucket in self._buckets.items() for i, w in bucket.items()}

    def restore(self, weights: dict[tuple[int, str], float], clock: float) -> None:
        """Load a snapshot (as written from ``take_dirty``): bucketed weights and the clock."""
        with self._lock:
            for (b, i), w in weights.items():
                self._buckets[b][i] = w
            self.clock = max(self.clock, clock)
            self._cache.clear()

    def top(self, window_s: float) -> tuple[list[str], np.ndarray]:
        """All items with weight in the window, best first: (item ids, float64 sums); ties by id.

        A ranking older than ``cache_s`` is served as it is while a background thread recomputes
        it (stale-while-revalidate), so the periodic recount never runs on a request's path;
        only the first request for a window computes it inline.
        """
        now = time.monotonic()
        hit = self._cache.get(window_s) if self.cache_s > 0 else None
        if hit is not None:
            if now - hit[0] >= self.cache_s and window_s not in self._refreshing:
                self._refreshing.add(window_s)
                threading.Thread(target=self._refresh, args=(window_s,), name="popularity-rank", daemon=True).start()
            return hit[1], hit[2]
        return self._rank(window_s)

    def _refresh(self, window_s: float) -> None:
        try:
            self._rank(window_s)
        finally:
            self._refreshing.discard(window_s)

    def _rank(self, window_s: float) -> tuple[list[str], np.ndarray]:
        now = time.monotonic()
        first = int((self.clock - window_s) // self.bucket_s) + 1
        total: dict[str, float] = {}
        with self._lock:
            buckets = [bucket.copy() for b, bucket in self._buckets.items() if b >= first]
        for bucket in buckets:
            for i, w in bucket.items():
                total[i] = total.get(i, 0.0) + w
        ids = sorted(total, key=lambda i: (-total[i], i))
        scores = np.fromiter((total[i] for i in ids), dtype=np.float64, count=len(ids))
        if len(self._cache) > 64:  # windows come from requests: keep the cache bounded
            self._cache.clear()
        self._cache[window_s] = (now, ids, scores)
        return ids, scores
