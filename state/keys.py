"""Key layout of a partition database.

=================  ======================  ===============================================
column family      key                     value (state/codec.py)
=================  ======================  ===============================================
default            ``u:`` + user_id        UserState (history, counts, recent event ids)
default            ``p:`` + item_id        ItemPopularity (decayed count, last ts)
default            ``d:`` + reason         dead-letter count (int64 big-endian)
default            ``r:`` + user_id        empty: the user changed and awaits rescoring
default            ``l:`` + item_id        ItemLinks of a new item (co-occurring known items)
default            ``w:``, ``W:``          windowed popularity and its unpublished pieces
                                           (``state/window_popularity.py``)
meta               ``offset``              next Kafka offset to read (int64 big-endian)
meta               ``applied``             events applied so far (int64 big-endian)
meta               ``duplicates``          events skipped as duplicates (same event_id) so far
meta               ``model_version``       version string of the models the state uses
meta               ``offset_resets``       times the stored offset was beyond the log end (int64)
meta               ``window_clock``        newest event time in windowed popularity (float64)
=================  ======================  ===============================================

Ids are UTF-8. Integers are fixed-width big-endian so they sort.
"""

from __future__ import annotations

import struct

__all__ = [
    "USER", "POPULARITY", "DEAD", "DIRTY", "LINKS", "dirty_key", "links_key", "META_OFFSET", "META_APPLIED", "META_DUPLICATES", "META_MODEL_VERSION", "META_OFFSET_RESETS",
    "user_key", "popularity_key", "dead_key", "strip_prefix", "encode_int", "decode_int",
]

USER = b"u:"
POPULARITY = b"p:"
DEAD = b"d:"
DIRTY = b"r:"
LINKS = b"l:"
META_OFFSET = b"offset"
META_APPLIED = b"applied"
META_DUPLICATES = b"duplicates"
META_MODEL_VERSION = b"model_version"
META_OFFSET_RESETS = b"offset_resets"

_I64 = struct.Struct(">q")


def user_key(user_id: str) -> bytes:
    return USER + user_id.encode()


def popularity_key(item_id: str) -> bytes:
    return POPULARITY + item_id.encode()


def dirty_key(user_id: str) -> bytes:
    return DIRTY + user_id.encode()


def links_key(item_id: str) -> bytes:
    return LINKS + item_id.encode()


def dead_key(reason: str) -> bytes:
    return DEAD + reason.encode()


def strip_prefix(key: bytes, prefix: bytes) -> str:
    """``u:alice`` -> ``alice``; raises ValueError when the prefix does not match."""
    if not key.startswith(prefix):
        raise ValueError(f"key {key!r} does not start with {prefix!r}")
    return key[len(prefix):].decode()


def encode_int(value: int) -> bytes:
    return _I64.pack(value)


def decode_int(raw: bytes) -> int:
    return _I64.unpack(raw)[0]
