"""Records of the compacted windowed-popularity topic (``kafka.window_topic()``): the flow publishes, the API reads.

Each partition of the flow publishes its windowed popularity (``state/window_popularity.py``) in
pieces: one record per (partition, time bucket, shard), key ``<partition>:<bucket>:<shard>``,
value the piece's whole content as JSON ``{"partition", "bucket", "shard", "clock", "items",
"weights"}`` (``clock``: the partition's newest event time, epoch s; ``weights``: summed event
weights, same order as ``items``). A dropped bucket is a tombstone per piece. Values are whole
states, not deltas, so a republished piece (a crash between delivery and commit) changes
nothing, and after compaction the topic holds ``partitions x buckets in the horizon x shards``
records at most, however long the history.
"""

from __future__ import annotations

import msgspec
import orjson

__all__ = ["WindowPiece", "window_key", "encode_window_piece", "decode_window_piece"]


class WindowPiece(msgspec.Struct, frozen=True):
    """One published piece: a shard of one time bucket of one partition."""

    partition: int
    bucket: int
    shard: int
    clock: float
    items: list[str]
    weights: list[float]


_DECODER = msgspec.json.Decoder(WindowPiece)


def window_key(partition: int, bucket: int, shard: int) -> bytes:
    """The compaction key of a piece."""
    return f"{partition}:{bucket}:{shard}".encode()


def encode_window_piece(partition: int, bucket: int, shard: int, clock: float, weights: dict[str, float]) -> bytes:
    """A piece's value (items sorted, so the same state always encodes to the same bytes)."""
    items = sorted(weights)
    return orjson.dumps({"partition": partition, "bucket": bucket, "shard": shard, "clock": clock,
                         "items": items, "weights": [weights[i] for i in items]})


def decode_window_piece(raw: bytes) -> WindowPiece:
    """Parse a piece's value.

    Raises
    ------
    msgspec.ValidationError
        If the value is not a piece (a field missing or of the wrong type), naming the field.
    """
    piece = _DECODER.decode(raw)
    if len(piece.items) != len(piece.weights):
        raise msgspec.ValidationError(f"items and weights differ in length: {len(piece.items)} != {len(piece.weights)}")
    return piece
