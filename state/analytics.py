"""Key layout and stores of the analytics flow's per-partition database (``state_dir/analytics/``).

The analytics flow keeps its own RocksDB per Kafka partition of ``events`` (one writer, opened
through ``state/partition.py``), separate from the real-time flow's, so each flow resumes from
its own committed offset.

=================  ==============================================  ===============================
column family      key                                             value
=================  ==============================================  ===============================
default            ``a:`` + user_id                                the user's join state (bytes;
                                                                   its struct lives in operators/)
default            ``c:`` + campaign ␟ arm ␟ scenario ␟ bucket      counters, float64[n] (see below)
default            ``g:`` + campaign ␟ group ␟ bucket               exposed/control stats, float64[n]
default            ``i:`` + campaign ␟ kind ␟ item_id               impressions/clicks of an item, int64
default            ``d:`` + reason                                  dead letters seen, int64
meta               ``offset``                                      next Kafka offset (PartitionDB)
meta               ``applied``                                     events applied so far, int64
=================  ==============================================  ===============================

``␟`` is the ASCII unit separator ``\\x1f`` (ids must not contain it); ``bucket`` is the epoch
second where the time bucket starts, 8 bytes big-endian so a campaign's buckets sort in time.
Counter values are a version byte then raw float64 (``np.frombuffer``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import NDArray
from rocksdict import WriteBatch

from state import keys
from state.errors import StateCorrupted
from state.partition import PartitionDB

__all__ = ["USER", "COUNTER", "GROUP", "ITEM", "DEAD", "SEP", "META_APPLIED", "counter_key", "group_key",
           "item_key", "item_prefix", "split_key", "AnalyticsStore"]

USER = b"a:"
COUNTER = b"c:"
GROUP = b"g:"
ITEM = b"i:"
DEAD = keys.DEAD  # same layout as the realtime flow: dead-letter counts per reason
SEP = b"\x1f"
META_APPLIED = keys.META_APPLIED

_VERSION = 1


def _join(prefix: bytes, *parts: str) -> bytes:
    return prefix + SEP.join(p.encode() for p in parts)


def counter_key(campaign: str, arm: str, scenario: str, bucket: int) -> bytes:
    """``c:`` + campaign ␟ arm ␟ scenario ␟ bucket (int64 big-endian)."""
    return _join(COUNTER, campaign, arm, scenario) + SEP + keys.encode_int(bucket)


def group_key(campaign: str, group: str, bucket: int) -> bytes:
    """``g:`` + campaign ␟ group ␟ bucket (int64 big-endian)."""
    return _join(GROUP, campaign, group) + SEP + keys.encode_int(bucket)


def item_prefix(campaign: str, kind: str) -> bytes:
    return _join(ITEM, campaign, kind) + SEP


def item_key(campaign: str, kind: str, item_id: str) -> bytes:
    """``i:`` + campaign ␟ kind ␟ item_id; kind is ``impressed`` or ``clicked``."""
    return item_prefix(campaign, kind) + item_id.encode()


def split_key(key: bytes) -> tuple[list[str], int | None]:
    """Inverse of ``counter_key``/``group_key``: (string parts, bucket); item keys give bucket None."""
    prefix, body = key[:2], key[2:]
    if prefix == ITEM:
        return [p.decode() for p in body.split(SEP, 2)], None
    head, bucket = body[:-9], body[-8:]
    return [p.decode() for p in head.split(SEP)], keys.decode_int(bucket)


def _encode_vec(values: NDArray[np.float64]) -> bytes:
    return bytes((_VERSION,)) + np.ascontiguousarray(values, dtype=np.float64).tobytes()


def _decode_vec(key: bytes, raw: bytes, n: int) -> NDArray[np.float64]:
    if not raw or raw[0] != _VERSION or len(raw) != 1 + 8 * n:
        raise StateCorrupted(key, f"expected version {_VERSION} and {n} float64 values, got {len(raw)} bytes")
    return np.frombuffer(raw, dtype=np.float64, offset=1).copy()


class AnalyticsStore:
    """Typed access to one partition's analytics database (reads committed data; writes stage).

    Parameters
    ----------
    db : PartitionDB
        The partition's analytics database (the caller is its single writer).
    """

    def __init__(self, db: PartitionDB) -> None:
        self.db = db

    # users: opaque bytes (the struct is the join's, in operators/) ---------------------------
    def get_users(self, user_ids: Sequence[str]) -> list[bytes | None]:
        return self.db.get_many([USER + u.encode() for u in user_ids])

    def stage_user(self, batch: WriteBatch, user_id: str, raw: bytes) -> None:
        batch.put(USER + user_id.encode(), raw)

    # float vectors (counters and group stats) --------------------------------------------------
    def get_vectors(self, keys_: Sequence[bytes], n: int) -> list[NDArray[np.float64]]:
        """Stored vectors of ``keys_`` (zeros where absent), each of shape (n,), float64."""
        return [np.zeros(n) if raw is None else _decode_vec(k, raw, n)
                for k, raw in zip(keys_, self.db.get_many(list(keys_)), strict=True)]

    def stage_vector(self, batch: WriteBatch, key: bytes, values: NDArray[np.float64]) -> None:
        batch.put(key, _encode_vec(values))

    def scan_vectors(self, prefix: bytes, n: int) -> Iterator[tuple[bytes, NDArray[np.float64]]]:
        for k, raw in self.db.scan(prefix):
            yield k, _decode_vec(k, raw, n)

    # integer counts (items, dead letters) ------------------------------------------------------
    def get_ints(self, keys_: Sequence[bytes]) -> list[int]:
        return [0 if raw is None else keys.decode_int(raw) for raw in self.db.get_many(list(keys_))]

    def stage_int(self, batch: WriteBatch, key: bytes, value: int) -> None:
        batch.put(key, keys.encode_int(value))

    def scan_ints(self, prefix: bytes) -> Iterator[tuple[bytes, int]]:
        for k, raw in self.db.scan(prefix):
            yield k, keys.decode_int(raw)

    def applied(self) -> int:
        raw = self.db.get_meta(META_APPLIED)
        return 0 if raw is None else keys.decode_int(raw)

    def stage_applied(self, batch: WriteBatch, n: int) -> None:
        self.db.stage_meta(batch, META_APPLIED, keys.encode_int(n))
