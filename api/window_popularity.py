"""Item popularity over a sliding time window ("top products of the last 24 h"), as the flow publishes it.

Each partition of the flow counts event weights per (time bucket, item) exactly once in its
RocksDB and publishes them in pieces to the compacted ``kafka.window_topic()``
(``operators/window_topic.py``); ``apply`` is the reader's hook for one piece (a tombstone drops
it). The API no longer folds ``events`` for this: a new process reads the compacted pieces
(at most partitions x buckets in the horizon x shards records), not the history.

A window of ``w`` seconds sums the buckets that start after ``clock - w`` (bucket-aligned),
where ``clock`` is the newest event time of any partition (so a replayed log has windows too,
not only a live shop). Rankings are cached per window for ``cache_s`` seconds and recomputed off
the request path (stale-while-revalidate).
"""

from __future__ import annotations

import threading
import time

import numpy as np

from operators.window_topic import WindowPiece

__all__ = ["WindowPopularity"]


class WindowPopularity:
    """The published pieces of every partition; ``top(window_s)`` ranks items by their sum over the window.

    Parameters
    ----------
    bucket_s : float
        Bucket width, seconds (as the flow's ``api.popularity_bucket_s``).
    horizon_s : float
        Longest window served (the flow drops older buckets).
    cache_s : float
        How long a ranking is reused (wall clock).
    """

    def __init__(self, bucket_s: float = 3600.0, horizon_s: float = 30 * 86400.0, cache_s: float = 1.0) -> None:
        self.bucket_s, self.horizon_s, self.cache_s = bucket_s, horizon_s, cache_s
        self._clocks: dict[int, float] = {}  # partition -> newest event time it published
        # (partition, bucket, shard) -> (item index array int32, weights float64)
        self._pieces: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._vocab: dict[str, int] = {}  # item_id -> dense index (grows; ids of pieces only)
        self._ids: list[str] = []
        self._cache: dict[float, tuple[float, list[str], np.ndarray]] = {}
        self._lock = threading.Lock()
        self._refreshing: set[float] = set()  # windows being re-ranked in the background

    @property
    def clock(self) -> float:
        """Newest event time of any partition (epoch s; 0 before the first piece)."""
        return max(self._clocks.values(), default=0.0)

    def apply(self, key: str, piece: object | None) -> None:
        """Reader hook for one record of the window topic: store the piece, or drop it (tombstone).

        A key that is not ``<partition>:<bucket>:<shard>`` is ignored (it is not ours).
        """
        try:
            p, b, s = (int(x) for x in key.split(":"))
        except ValueError:
            return
        if not isinstance(piece, WindowPiece):
            with self._lock:
                self._pieces.pop((p, b, s), None)
            return
        with self._lock:
            vocab, ids = self._vocab, self._ids
            idx = np.empty(len(piece.items), dtype=np.int32)
            for j, item in enumerate(piece.items):
                i = vocab.get(item)
                if i is None:
                    i = vocab[item] = len(ids)
                    ids.append(item)
                idx[j] = i
            self._pieces[(p, b, s)] = (idx, np.asarray(piece.weights, dtype=np.float64))
            if piece.clock > self._clocks.get(p, 0.0):
                self._clocks[p] = piece.clock

    def __len__(self) -> int:
        """Pieces held."""
        return len(self._pieces)

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
        with self._lock:
            first = int((self.clock - window_s) // self.bucket_s) + 1
            parts = [v for (_, b, _), v in self._pieces.items() if b >= first]
            n_vocab, ids = len(self._ids), self._ids
        if parts:
            total = np.bincount(np.concatenate([p[0] for p in parts]), weights=np.concatenate([p[1] for p in parts]),
                                minlength=n_vocab)
        else:
            total = np.zeros(0)
        nz = np.flatnonzero(total > 0)
        names = np.array([ids[i] for i in nz], dtype=object)
        order = np.lexsort((names.astype(str), -total[nz])) if len(nz) else nz
        ranked, scores = names[order].tolist(), total[nz][order]
        if len(self._cache) > 64:  # windows come from requests: keep the cache bounded
            self._cache.clear()
        self._cache[window_s] = (now, ranked, scores)
        return ranked, scores
