"""Windowed item popularity of one partition: summed weights per (time bucket, item), with the offset.

Key layout (default column family of the partition database; see ``state/keys.py``):

=====================================  ================================================
key                                    value
=====================================  ================================================
``w:`` bucket (int64 BE) + item_id     summed event weight of the item in that bucket
                                       (float64 BE)
``W:`` bucket (int64 BE) + shard (u16) empty: the piece changed since it was last
                                       published (a restart publishes it again)
meta ``window_clock``                  newest event time folded (float64 BE)
=====================================  ================================================

A bucket is ``int(ts // bucket_s)``. The ``clock`` is the newest event time of the partition;
buckets that end before ``clock - horizon_s`` are dropped (and events that fall in them are not
counted). A bucket is published in ``n_shards`` pieces (items by a stable hash), so one piece
stays small and only the pieces that changed are published again.
"""

from __future__ import annotations

import struct
import zlib

from rocksdict import WriteBatch

from state.partition import PartitionDB

__all__ = ["WINDOW", "WINDOW_DIRTY", "META_WINDOW_CLOCK", "WindowStore", "shard_of"]

WINDOW = b"w:"
WINDOW_DIRTY = b"W:"
META_WINDOW_CLOCK = b"window_clock"

_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")
_U16 = struct.Struct(">H")

Piece = tuple[int, int]  # (bucket, shard)


def shard_of(item_id: str, n_shards: int) -> int:
    """The piece of a bucket an item is published in: CRC-32 of its UTF-8 id modulo ``n_shards``."""
    return zlib.crc32(item_id.encode()) % n_shards


class WindowStore:
    """Bucketed item weights of one partition, mirrored in memory; changes staged into write batches.

    Parameters
    ----------
    db : PartitionDB
        The partition's database (its single writer stages into batches the caller commits).
    bucket_s : float
        Bucket width, seconds.
    horizon_s : float
        Longest window served; older buckets are dropped.
    n_shards : int
        Pieces per bucket in the published topic.
    """

    def __init__(self, db: PartitionDB, bucket_s: float, horizon_s: float, n_shards: int = 8) -> None:
        self.db, self.bucket_s, self.horizon_s, self.n_shards = db, bucket_s, horizon_s, n_shards
        self.buckets: dict[int, dict[str, float]] = {}
        for k, v in db.scan(WINDOW):
            b = _I64.unpack(k[2:10])[0]
            self.buckets.setdefault(b, {})[k[10:].decode()] = _F64.unpack(v)[0]
        raw = db.get_meta(META_WINDOW_CLOCK)
        self.clock = 0.0 if raw is None else _F64.unpack(raw)[0]
        self.unpublished: set[Piece] = {(_I64.unpack(k[2:10])[0], _U16.unpack(k[10:12])[0])
                                        for k, _ in db.scan(WINDOW_DIRTY)}
        """Pieces changed since they were last published (persisted: a crash publishes them again)."""
        self._changed: set[tuple[int, str]] = set()
        self._dropped: set[int] = set()
        self._new_pieces: set[Piece] = set()

    def _oldest(self, clock: float) -> int:
        return int((clock - self.horizon_s) // self.bucket_s)

    def add(self, item_id: str, weight: float, ts: float) -> None:
        """Count ``weight`` for ``item_id`` at event time ``ts`` (epoch s); ignored past the horizon."""
        if weight <= 0:
            return
        b = int(ts // self.bucket_s)
        if ts > self.clock:
            oldest = self._oldest(ts)
            if self.clock == 0.0 or oldest > self._oldest(self.clock):
                for old in [k for k in self.buckets if k < oldest]:
                    del self.buckets[old]
                    self._dropped.add(old)
            self.clock = ts
        if b < self._oldest(self.clock):
            return
        bucket = self.buckets.setdefault(b, {})
        bucket[item_id] = bucket.get(item_id, 0.0) + weight
        self._changed.add((b, item_id))
        piece = (b, shard_of(item_id, self.n_shards))
        if piece not in self.unpublished:
            self._new_pieces.add(piece)

    def stage(self, batch: WriteBatch) -> None:
        """Put the rows changed since the last call, the dropped buckets, the clock and the
        unpublished markers into ``batch`` (commit it with the offset)."""
        for b in self._dropped:  # its rows go; every piece is marked, to publish its tombstone
            batch.delete_range(WINDOW + _I64.pack(b), WINDOW + _I64.pack(b + 1))
            for shard in range(self.n_shards):
                batch.put(WINDOW_DIRTY + _I64.pack(b) + _U16.pack(shard), b"")
                self.unpublished.add((b, shard))
        for b, item in self._changed:
            w = self.buckets.get(b, {}).get(item)
            if w is not None:
                batch.put(WINDOW + _I64.pack(b) + item.encode(), _F64.pack(w))
        for b, shard in self._new_pieces:
            if b in self.buckets:
                batch.put(WINDOW_DIRTY + _I64.pack(b) + _U16.pack(shard), b"")
                self.unpublished.add((b, shard))
        if self._changed or self._dropped:
            self.db.stage_meta(batch, META_WINDOW_CLOCK, _F64.pack(self.clock))
        self._changed, self._dropped, self._new_pieces = set(), set(), set()

    def take_unpublished(self, batch: WriteBatch) -> dict[Piece, dict[str, float] | None]:
        """Every unpublished piece's whole content (``None``: the bucket was dropped, publish a
        tombstone); their markers are deleted in ``batch`` (commit it after the pieces were delivered)."""
        out: dict[Piece, dict[str, float] | None] = {}
        for b, shard in self.unpublished:
            bucket = self.buckets.get(b)
            out[(b, shard)] = None if bucket is None else {
                i: w for i, w in bucket.items() if shard_of(i, self.n_shards) == shard}
            batch.delete(WINDOW_DIRTY + _I64.pack(b) + _U16.pack(shard))
        self.unpublished = set()
        return out
