"""Windowed-popularity pieces (``operators/window_topic.py``): the version-2 binary layout the flow
writes, version-1 JSON pieces still read, bad values refused with a clear error; and the API's
``WindowPopularity`` ranks the same whether it indexes pieces one by one or many at once.
"""

from __future__ import annotations

import random
import struct

import msgspec
import numpy as np
import orjson
import pytest

from api.window_popularity import WindowPopularity
from operators.window_topic import PIECE_VERSION, decode_window_piece, encode_window_piece, window_key

WEIGHTS = {"i2": 1.5, "i10": 3.0, "é-ü 😀": 0.25, "": 2.0, "a\x00b": 4.0}


def _v1(partition: int, bucket: int, shard: int, clock: float, weights: dict[str, float]) -> bytes:
    """A piece as an older flow published it (JSON, version 1)."""
    items = sorted(weights)
    return orjson.dumps({"partition": partition, "bucket": bucket, "shard": shard, "clock": clock, "items": items,
                         "weights": [weights[i] for i in items]})


def test_a_piece_round_trips_and_old_json_pieces_are_still_read():
    raw = encode_window_piece(3, 491_234, 7, 1.7e9 + 0.5, WEIGHTS)
    assert raw[:4] == b"\x00WP" + bytes([PIECE_VERSION]) and not raw.startswith(b"{")
    assert raw == encode_window_piece(3, 491_234, 7, 1.7e9 + 0.5, dict(reversed(WEIGHTS.items())))  # same state, same bytes
    for value in (raw, _v1(3, 491_234, 7, 1.7e9 + 0.5, WEIGHTS)):
        piece = decode_window_piece(value)
        assert (piece.partition, piece.bucket, piece.shard, piece.clock) == (3, 491_234, 7, 1.7e9 + 0.5)
        assert piece.items.to_pylist() == sorted(WEIGHTS)
        assert piece.weights.dtype == np.float64 and piece.weights.tolist() == [WEIGHTS[i] for i in sorted(WEIGHTS)]
    empty = decode_window_piece(encode_window_piece(0, 1, 0, 2.0, {}))
    assert len(empty.items) == 0 and len(empty.weights) == 0
    # weights are float32 only when that loses nothing (sums of small event weights), else float64
    assert raw[26] == 4
    fine = encode_window_piece(0, 1, 0, 2.0, {"x": 0.1, "y": 1e300, "z": 1.0})
    assert fine[26] == 8 and decode_window_piece(fine).weights.tolist() == [0.1, 1e300, 1.0]


def test_bad_values_are_refused_with_a_clear_error():
    raw = encode_window_piece(1, 2, 3, 4.0, {"a": 1.0, "bb": 2.0})
    n = 2
    data_at = 32 + 4 * n + 4 * (n + 1)  # float32 weights: 1.0 and 2.0 are exact
    with pytest.raises(ValueError, match="version 9 is unknown to this reader"):
        decode_window_piece(raw[:3] + bytes([9]) + raw[4:])
    with pytest.raises(ValueError, match="shorter than its 32-byte header"):
        decode_window_piece(raw[:20])
    with pytest.raises(ValueError, match="truncated"):
        decode_window_piece(raw[:32 + 4])
    with pytest.raises(ValueError, match="offsets do not match"):
        decode_window_piece(raw + b"x")
    with pytest.raises(ValueError, match="offsets do not match"):  # offsets going backwards
        decode_window_piece(raw[:32 + 4 * n] + struct.pack("<3i", 0, 2, 1) + raw[data_at:])
    with pytest.raises(Exception, match="(?i)utf-?8"):  # ids that are not UTF-8
        decode_window_piece(raw[:data_at] + b"\xff" + raw[data_at + 1:])
    with pytest.raises(msgspec.ValidationError, match="differ in length"):
        decode_window_piece(orjson.dumps({"partition": 0, "bucket": 0, "shard": 0, "clock": 0.0, "items": ["a"],
                                          "weights": []}))
    with pytest.raises(msgspec.ValidationError, match="weights"):
        decode_window_piece(orjson.dumps({"partition": 0, "bucket": 0, "shard": 0, "clock": 0.0, "items": ["a"]}))


def _records(seed: int) -> list[tuple[str, bytes | None]]:
    """A topic's worth of records: 2 partitions x 40 hourly buckets x 3 shards, v1 and v2 mixed, pieces
    republished with other weights, tombstones (some for pieces never indexed before they were dropped)."""
    rng = random.Random(seed)
    now_bucket = 480_000
    out: list[tuple[str, bytes | None]] = []
    for rnd in range(3):
        for p in range(2):
            for b in range(now_bucket - 39, now_bucket + 1):
                for s in range(3):
                    weights = {f"i{rng.randrange(300)}": float(rng.randint(1, 9)) for _ in range(rng.randint(0, 25))}
                    enc = _v1 if rng.random() < 0.3 else encode_window_piece
                    out.append((window_key(p, b, s).decode(), enc(p, b, s, b * 3600.0 + 100 * rnd + p, weights)))
                    if rng.random() < 0.1:
                        out.append((window_key(p, b, s).decode(), None))
    out.append(("not-a-piece-key", encode_window_piece(0, now_bucket, 0, now_bucket * 3600.0, {"x": 9e9})))  # ignored
    return out


def _recount(records: list[tuple[str, bytes | None]], window_s: float) -> list[tuple[str, float]]:
    latest: dict[str, bytes | None] = {}
    for k, v in records:
        latest[k] = v
    pieces = [decode_window_piece(v) for k, v in latest.items() if v is not None and k.count(":") == 2]
    clock = max(p.clock for p in pieces)
    first = int((clock - window_s) // 3600.0) + 1
    total: dict[str, float] = {}
    for p in pieces:
        if p.bucket >= first:
            for i, w in zip(p.items.to_pylist(), p.weights.tolist(), strict=True):
                total[i] = total.get(i, 0.0) + w
    return sorted(((i, w) for i, w in total.items() if w > 0), key=lambda x: (-x[1], x[0]))


@pytest.mark.parametrize("pending_entries", [1, 50, 10**9])
def test_popularity_ranks_as_a_recount_however_many_pieces_wait_to_be_indexed(pending_entries):
    records = _records(pending_entries)
    pop = WindowPopularity(3600.0, 40 * 3600.0, cache_s=0.0, pending_entries=pending_entries)
    for n, (key, value) in enumerate(records):
        pop.apply(key, None if value is None else decode_window_piece(value))
        if n % 97 == 0:  # rankings asked for while pieces arrive index what waits
            pop.top(6 * 3600.0)
    live = {k for k, v in dict(records).items() if v is not None and k.count(":") == 2}
    assert len(pop) == len(live)
    for window_s in (3600.0, 6 * 3600.0, 40 * 3600.0):
        ids, scores = pop.top(window_s)
        want = _recount(records, window_s)
        assert ids == [i for i, _ in want]
        assert np.allclose(scores, [w for _, w in want])
