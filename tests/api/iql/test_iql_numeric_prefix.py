"""Numeric columns' range structure (``api.iql.numeric``): fine buckets plus coarse prefixes answer every
range of ranks as the one-prefix-per-bucket layout did (issue 14's memory: ~10 instead of ~33 MB per
column at 1M items)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from api.iql.numeric import GROUP, NumericColumn


def _column(values: list[float], bucket: int) -> NumericColumn:
    column = NumericColumn(bucket=bucket)
    column.bulk_load(np.arange(len(values)), values)
    return column


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 30).map(float), min_size=0, max_size=90), st.integers(1, 7))
def test_every_rank_range_is_the_slice_of_sorted_items(values, bucket):
    base = _column(values, bucket)._base
    n = len(base.sorted_idx)
    assert len(base.fine) == -(-n // bucket)
    for a in range(n + 1):
        for b in range(a, n + 1):
            assert base.ranks(a, b) == BitMap(base.sorted_idx[a:b].tolist()), (a, b)


def test_prefixes_are_the_old_per_bucket_ones_and_stay_unchanged():
    rng = np.random.default_rng(3)
    column = _column(rng.normal(size=5_000).tolist(), 7)
    base = column._base
    for j, prefix in enumerate(base.coarse):
        assert prefix == BitMap(base.sorted_idx[: j * GROUP * 7].tolist())
    before = [BitMap(p) for p in (*base.fine, *base.coarse)]
    for lo, hi in rng.normal(size=(300, 2)):
        column.range(min(lo, hi), max(lo, hi))
    assert [*base.fine, *base.coarse] == before  # a query never changes the stored bitmaps


def test_far_smaller_than_a_prefix_per_bucket():
    rng = np.random.default_rng(0)
    n, bucket = 200_000, 800
    base = _column(rng.lognormal(3, 1, n).tolist(), bucket)._base
    stored = sum(len(b.serialize()) for b in (*base.fine, *base.coarse))
    per_bucket = sum(len(BitMap(base.sorted_idx[: k * bucket].tolist()).serialize())
                     for k in range(len(base.fine) + 1))
    assert stored < 0.4 * per_bucket
