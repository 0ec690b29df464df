"""api/iql/strings.py: ``StringVocabulary`` codes strings as a dict would (first sight order, stable
codes, None for unknown), through merges, bulk ``codes`` and hash collisions."""

from __future__ import annotations

import numpy as np
import pytest

import api.iql.strings as strings_module
from api.iql.strings import StringVocabulary


def _reference(values: list[str]) -> dict[str, int]:
    ref: dict[str, int] = {}
    for v in values:
        ref.setdefault(v, len(ref))
    return ref


@pytest.mark.parametrize("hash_fn", [hash, len, lambda s: 0], ids=["hash", "len-collides", "all-collide"])
def test_codes_equal_a_dict_through_merges_bulk_adds_and_collisions(hash_fn, monkeypatch) -> None:
    # merges at 512 recent strings instead of 4,096: several merges of colliding runs, at a quarter of the
    # strings (len's long runs of equal hashes cost quadratic time in the size of the vocabulary)
    monkeypatch.setattr(strings_module, "_MIN_RECENT", 512)
    rng = np.random.default_rng(4)
    n = 3_000
    if hash_fn is not hash and hash_fn is not len:
        n = 600  # every string in one hash run: quadratic, keep it small
    pool = [f"title {k} é" if k % 5 else f"t{k}\ud800" for k in range(n)]  # non-ASCII and a lone surrogate
    vocab = StringVocabulary(hash_fn)
    seen: list[str] = []
    ref: dict[str, int] = {}  # _reference(seen), kept up to date as seen grows (rebuilding it per value is quadratic)
    for k in range(0, n, 400):  # bulk chunks with repeats inside and across chunks
        chunk = [pool[int(i)] for i in rng.integers(0, min(n, k + 400), 300)]
        codes = vocab.codes(chunk)
        seen.extend(chunk)
        for v in chunk:
            ref.setdefault(v, len(ref))
        assert codes.tolist() == [ref[v] for v in chunk]
    for v in pool[: n // 2]:
        assert vocab.code(v) == ref.setdefault(v, len(ref))
        seen.append(v)
    assert ref == _reference(seen)
    assert len(vocab) == len(ref)
    for v, code in ref.items():
        assert vocab.get(v) == code and vocab.value(code) == v
    assert vocab.get("never added") is None and vocab.get("") is None
    vocab.merge()
    assert all(vocab.get(v) == code for v, code in ref.items())
    with pytest.raises(IndexError, match="code -1 not in"):
        vocab.value(-1)


def test_a_merged_string_costs_its_bytes_plus_20():
    """The end offset (8 B) and the hash-sorted index (hash 8 B, code 4 B): no hash kept per code beside
    them (8 MB more at 1M titles). Measured with tracemalloc, which numpy reports its arrays to."""
    import tracemalloc

    n = 1 << 17  # capacities double up to exactly n: no spare room counted
    values = [f"brand {k % 97} shoe {k}" for k in range(n)]
    tracemalloc.start()
    try:
        vocab = StringVocabulary()
        for k in range(0, n, 20_000):
            vocab.codes(values[k:k + 20_000])
        vocab.merge()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert vocab._recent == {} and len(vocab) == n
    blob = sum(len(v) for v in values)
    assert held < 1.2 * blob + 22 * n, (held, blob, n)
    assert [vocab.get(v) for v in values[::997]] == list(range(0, n, 997))
