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

A restart does not read the topic again: ``PopularitySnapshots`` writes the pieces as arrays,
with the topic offsets they reflect, to a local file (``<api state_dir>/popularity.snapshot``)
once the reader has caught up and then at most every ``every_s`` while pieces change; a process
that finds the file loads it (arrays, no per-item work) and reads the topic from those offsets.
A missing, corrupt or foreign file (another topic or bucket width) is ignored (logged), and the
topic is read from its start.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa

from operators.window_topic import WindowPiece

__all__ = ["WindowPopularity", "PopularitySnapshots"]

log = logging.getLogger(__name__)


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
    pending_entries : int
        Items of received pieces that may wait before they are indexed (bounds the memory of
        pieces held as decoded; they are indexed earlier when a ranking or snapshot needs them).
    """

    def __init__(self, bucket_s: float = 3600.0, horizon_s: float = 30 * 86400.0, cache_s: float = 1.0,
                 pending_entries: int = 1_000_000) -> None:
        self.bucket_s, self.horizon_s, self.cache_s = bucket_s, horizon_s, cache_s
        self.pending_entries = pending_entries
        self._clocks: dict[int, float] = {}  # partition -> newest event time it published
        # (partition, bucket, shard) -> (item index array int32, weights float64)
        self._pieces: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._vocab: dict[str, int] = {}  # item_id -> dense index (grows; ids of pieces only)
        self._ids: list[str] = []
        self._pending: dict[tuple[int, int, int], WindowPiece] = {}  # decoded, items not indexed yet
        self._pending_entries = 0
        self._cache: dict[float, tuple[float, list[str], np.ndarray]] = {}
        self._lock = threading.Lock()
        self._refreshing: set[float] = set()  # windows being re-ranked in the background

    @property
    def clock(self) -> float:
        """Newest event time of any partition (epoch s; 0 before the first piece)."""
        return max(self._clocks.values(), default=0.0)

    def apply(self, key: str, piece: object | None) -> None:
        """Reader hook for one record of the window topic: store the piece, or drop it (tombstone).

        A key that is not ``<partition>:<bucket>:<shard>`` is ignored (it is not ours). A piece is
        held as it was decoded until its items are indexed, all pending pieces at once
        (``_index_pending``: one Arrow dictionary encoding, Python work only per distinct item):
        when a ranking or a snapshot needs them, or once ``pending_entries`` items wait.
        """
        try:
            p, b, s = (int(x) for x in key.split(":"))
        except ValueError:
            return
        with self._lock:
            self._pieces.pop((p, b, s), None)
            old = self._pending.pop((p, b, s), None)  # re-inserted below: dict order stays the arrival order
            if old is not None:
                self._pending_entries -= len(old.items)
            if not isinstance(piece, WindowPiece):
                return
            self._pending_entries += len(piece.items)
            self._pending[(p, b, s)] = piece
            if piece.clock > self._clocks.get(p, 0.0):
                self._clocks[p] = piece.clock
            if self._pending_entries >= self.pending_entries:
                self._index_pending()

    def _index_pending(self) -> None:
        """Give the pending pieces' items dense indices (new items get the next ones); call with the lock held.

        Cost: a C++ hash pass over all pending entries, then one dict lookup per distinct item.
        """
        if not self._pending:
            return
        keys, pieces = list(self._pending), list(self._pending.values())
        enc = pa.concat_arrays([p.items for p in pieces]).dictionary_encode()
        vocab, ids = self._vocab, self._ids
        n0 = len(vocab)
        uniq = enc.dictionary.to_pylist()
        mapped = np.fromiter((vocab.setdefault(item, len(vocab)) for item in uniq), dtype=np.int32, count=len(uniq))
        if len(vocab) > n0:
            ids.extend(item for item, i in zip(uniq, mapped.tolist(), strict=True) if i >= n0)
        idx = mapped[enc.indices.to_numpy(zero_copy_only=False)] if len(uniq) else np.zeros(len(enc), np.int32)
        cuts = np.cumsum([len(p.items) for p in pieces])[:-1]
        for key, piece, part in zip(keys, pieces, np.split(idx, cuts), strict=True):
            self._pieces[key] = (part, np.array(piece.weights, dtype=np.float64))  # a copy: not the raw record
        self._pending.clear()
        self._pending_entries = 0

    def __len__(self) -> int:
        """Pieces held."""
        return len(self._pieces) + len(self._pending)

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
            self._index_pending()
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


class _Snapshot(msgspec.Struct):
    """The file's content: pieces as flat arrays (raw little-endian bytes), ids, clocks, offsets."""

    version: int
    topic: str
    bucket_s: float
    offsets: dict[int, int]
    clocks: dict[int, float]
    ids: list[str]
    keys: bytes  # int64 (n_pieces, 3): partition, bucket, shard
    lengths: bytes  # int64 (n_pieces,)
    items: bytes  # int32, every piece's item indices, concatenated
    weights: bytes  # float64, same length


class PopularitySnapshots:
    """Local snapshots of a ``WindowPopularity`` and the window topic's offsets it reflects.

    Parameters
    ----------
    popularity : WindowPopularity
        What is saved and restored.
    path : Path
        The snapshot file (written to a temporary name, then renamed: readers never see half a file;
        several processes on one state directory may write it, each a consistent state).
    topic : str
        The window topic (a file of another topic is ignored).
    every_s : float
        Least interval between two saves while pieces change, seconds.
    """

    def __init__(self, popularity: WindowPopularity, path: Path, topic: str, every_s: float = 30.0) -> None:
        self.popularity, self.path, self.topic, self.every_s = popularity, Path(path), topic, every_s
        self._offsets: dict[int, int] = {}
        self._saved: dict[int, int] | None = None
        self._last_save = 0.0

    def load(self) -> dict[int, int]:
        """Restore the saved pieces; returns the offsets to read the topic from ({} = its start)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            snap = msgspec.msgpack.decode(raw, type=_Snapshot)
            if snap.version != 1 or snap.topic != self.topic or snap.bucket_s != self.popularity.bucket_s:
                log.info("popularity snapshot %s is of another topic or bucket width: reading %s from its start",
                         self.path, self.topic)
                return {}
            keys = np.frombuffer(snap.keys, dtype="<i8").reshape(-1, 3)
            lengths = np.frombuffer(snap.lengths, dtype="<i8")
            items = np.frombuffer(snap.items, dtype="<i4")
            weights = np.frombuffer(snap.weights, dtype="<f8")
            if len(keys) != len(lengths) or len(items) != len(weights) or int(lengths.sum()) != len(items) or (
                    len(items) and int(items.max()) >= len(snap.ids)):
                raise ValueError("inconsistent array lengths")
            cuts = np.cumsum(lengths)[:-1]
            split = zip(keys.tolist(), np.split(items, cuts), np.split(weights, cuts), strict=True) if len(keys) else ()
            pieces = {(int(a), int(b), int(c)): (i, w) for (a, b, c), i, w in split}
        except Exception as exc:  # whatever is wrong with the file, the topic is still there: never fail a start
            log.error("popularity snapshot %s unusable (%s): reading %s from its start", self.path, exc, self.topic)
            return {}
        p = self.popularity
        with p._lock:
            p._ids = list(snap.ids)
            p._vocab = {item: i for i, item in enumerate(p._ids)}
            p._clocks = dict(snap.clocks)
            p._pieces = pieces
            p._pending.clear()
            p._pending_entries = 0
        self._offsets = self._saved = dict(snap.offsets)
        log.info("popularity restored from %s: %d pieces, %d items; reading %s from offsets %s",
                 self.path, len(keys), len(snap.ids), self.topic, snap.offsets)
        return dict(snap.offsets)

    def on_batch(self, offsets: dict[int, int], caught_up: bool) -> None:
        """The window table's hook (its reader thread): save once caught up, then at most every ``every_s``."""
        self._offsets = offsets
        if caught_up and offsets != self._saved and (self._saved is None or time.monotonic() - self._last_save >= self.every_s):
            self.save()

    def save(self) -> None:
        """Write the pieces and the offsets last reported (call on the reader thread, or after it stopped)."""
        p = self.popularity
        with p._lock:
            p._index_pending()
            pieces = list(p._pieces.items())
            ids, clocks = list(p._ids), dict(p._clocks)
        keys = np.array([k for k, _ in pieces], dtype="<i8").reshape(-1, 3)
        lengths = np.array([len(v[0]) for _, v in pieces], dtype="<i8")
        items = np.concatenate([v[0] for _, v in pieces]).astype("<i4") if pieces else np.zeros(0, "<i4")
        weights = np.concatenate([v[1] for _, v in pieces]).astype("<f8") if pieces else np.zeros(0, "<f8")
        raw = msgspec.msgpack.encode(_Snapshot(1, self.topic, p.bucket_s, dict(self._offsets), clocks, ids,
                                               keys.tobytes(), lengths.tobytes(), items.tobytes(), weights.tobytes()))
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(raw)
        os.replace(tmp, self.path)
        self._saved, self._last_save = dict(self._offsets), time.monotonic()
