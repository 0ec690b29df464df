"""Records of the compacted windowed-popularity topic (``kafka.window_topic()``): the flow publishes, the API reads.

Each partition of the flow publishes its windowed popularity (``state/window_popularity.py``) in
pieces: one record per (partition, time bucket, shard), key ``<partition>:<bucket>:<shard>``,
value the piece's whole content. A dropped bucket is a tombstone per piece. Values are whole
states, not deltas, so a republished piece (a crash between delivery and commit) changes
nothing, and after compaction the topic holds ``partitions x buckets in the horizon x shards``
records at most, however long the history.

Value formats (the reader tells them apart by the first byte and reads both):

* **version 2** (written since issue 14's start-up work): a fixed little-endian binary layout,
  read with ``numpy.frombuffer`` and a zero-copy Arrow string array, no per-item Python work:

  ======  =====================  ===================================================
  offset  type                   content
  ======  =====================  ===================================================
  0       4 bytes                magic ``b"\\x00WP"`` + version byte ``2``
  4       int32                  partition
  8       int64                  bucket (bucket start = bucket x bucket width)
  16      float64                clock: the partition's newest event time, epoch s
  24      uint16                 shard
  26      uint8                  w: bytes per weight, 4 (float32) or 8 (float64)
  27      uint8                  0 (reserved)
  28      uint32                 n: items in the piece
  32      w bytes x n            summed event weights, in item order (float32 only when
                                 every weight is exactly a float32: no precision is lost)
  ..      int32 x (n + 1)        item offsets into the UTF-8 data (Arrow layout, from 0)
  ..      bytes                  the items' UTF-8 ids, concatenated (items sorted)
  ======  =====================  ===================================================

* **version 1** (JSON, written before): ``{"partition", "bucket", "shard", "clock", "items",
  "weights"}``; still read, so pieces an older flow published (compaction keeps a bucket's piece
  until it is republished or drops out of the horizon) count until they are replaced.

An API older than version 2 cannot read version-2 pieces (it logs and skips them): upgrade the
API nodes before the flow.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import msgspec
import numpy as np
import pyarrow as pa

__all__ = ["WindowPiece", "window_key", "encode_window_piece", "decode_window_piece", "PIECE_VERSION"]

PIECE_VERSION = 2
"""Version of the value layout ``encode_window_piece`` writes."""

_MAGIC = b"\x00WP"
_HEAD = struct.Struct("<3sBiqdHBxI")  # magic, version, partition, bucket, clock, shard, weight bytes, n: 32 bytes


@dataclass(frozen=True, slots=True)
class WindowPiece:
    """One published piece: a shard of one time bucket of one partition.

    ``items`` is an Arrow string array of n item ids, ``weights`` float64 of shape (n,), same order.
    """

    partition: int
    bucket: int
    shard: int
    clock: float
    items: pa.StringArray
    weights: np.ndarray


class _JsonPiece(msgspec.Struct, frozen=True):
    """Version 1 of the value (JSON)."""

    partition: int
    bucket: int
    shard: int
    clock: float
    items: list[str]
    weights: list[float]


_DECODER = msgspec.json.Decoder(_JsonPiece)


def window_key(partition: int, bucket: int, shard: int) -> bytes:
    """The compaction key of a piece."""
    return f"{partition}:{bucket}:{shard}".encode()


def encode_window_piece(partition: int, bucket: int, shard: int, clock: float, weights: dict[str, float]) -> bytes:
    """A piece's value in the current layout (version 2; items sorted, so the same state always
    encodes to the same bytes).

    Raises
    ------
    UnicodeEncodeError
        If an item id is not valid Unicode (a lone surrogate).
    """
    items = sorted(weights)
    data = [i.encode() for i in items]
    offsets = np.zeros(len(items) + 1, dtype="<i4")
    np.cumsum([len(d) for d in data], out=offsets[1:])
    w = np.array([weights[i] for i in items], dtype="<f8")
    with np.errstate(over="ignore"):  # beyond float32's range: not exact, float64 below
        w32 = w.astype("<f4")
    exact = bool((w32 == w).all())  # sums of small event weights: half the bytes, same values
    return b"".join((_HEAD.pack(_MAGIC, PIECE_VERSION, partition, bucket, clock, shard, 4 if exact else 8, len(items)),
                     (w32 if exact else w).tobytes(), offsets.tobytes(), *data))


def _decode_v2(raw: bytes) -> WindowPiece:
    if len(raw) < _HEAD.size:
        raise ValueError(f"window piece of {len(raw)} bytes is shorter than its {_HEAD.size}-byte header")
    _m, _v, partition, bucket, clock, shard, width, n = _HEAD.unpack_from(raw)
    if width not in (4, 8):
        raise ValueError(f"window piece weights of {width} bytes (4 or 8 expected)")
    at = _HEAD.size + width * n
    end_offsets = at + 4 * (n + 1)
    if len(raw) < end_offsets:
        raise ValueError(f"window piece of {n} items is truncated ({len(raw)} bytes)")
    weights = np.frombuffer(raw, dtype=f"<f{width}", count=n, offset=_HEAD.size).astype(np.float64)
    offsets = np.frombuffer(raw, dtype="<i4", count=n + 1, offset=at)
    if offsets[0] != 0 or int(offsets[-1]) != len(raw) - end_offsets or (n and bool((np.diff(offsets) < 0).any())):
        raise ValueError("window piece item offsets do not match its data")
    buf = pa.py_buffer(raw)
    items = pa.StringArray.from_buffers(n, buf.slice(at, 4 * (n + 1)), buf.slice(end_offsets))
    items.validate(full=True)  # UTF-8
    return WindowPiece(partition, bucket, shard, clock, items, weights)


def decode_window_piece(raw: bytes) -> WindowPiece:
    """Parse a piece's value (version 2, or version 1 JSON).

    Raises
    ------
    msgspec.ValidationError
        If a version-1 value is not a piece (a field missing or of the wrong type), naming the field.
    ValueError
        If a version-2 value is truncated or inconsistent, its ids are not UTF-8, or the version is
        newer than this reader knows (upgrade the API).
    """
    if raw[:3] == _MAGIC:
        if len(raw) < 4 or raw[3] != PIECE_VERSION:
            raise ValueError(f"window piece format version {raw[3] if len(raw) > 3 else '?'} is unknown to this "
                             f"reader (it reads 1 and {PIECE_VERSION}): upgrade the API")
        return _decode_v2(raw)
    piece = _DECODER.decode(raw)
    if len(piece.items) != len(piece.weights):
        raise msgspec.ValidationError(f"items and weights differ in length: {len(piece.items)} != {len(piece.weights)}")
    return WindowPiece(piece.partition, piece.bucket, piece.shard, piece.clock, pa.array(piece.items, pa.string()),
                       np.asarray(piece.weights, dtype=np.float64))
