"""Hit-rate helpers: exact small cases and the chance level against ``math.comb``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulators.hit_rate import hit_rate_at_k, precision_at_k, random_hit_rate_at_k


def test_hit_rate_and_precision_small_case() -> None:
    truth = {"a": {"1", "2"}, "b": {"9"}, "c": set()}
    recs = {"a": ["3", "2", "1"], "b": ["1", "2", "9"], "c": ["1"]}
    assert hit_rate_at_k(recs, truth, 2) == pytest.approx(1 / 3)
    assert hit_rate_at_k(recs, truth, 3) == pytest.approx(2 / 3)
    assert precision_at_k(recs, truth, 2) == pytest.approx((1 / 2 + 0 + 0) / 3)
    assert precision_at_k(recs, truth, 3) == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert math.isnan(hit_rate_at_k({}, truth, 3))
    with pytest.raises(ValueError, match="k: must be >= 1; got 0"):
        hit_rate_at_k(recs, truth, 0)


@given(
    sizes=st.lists(st.integers(0, 60), min_size=1, max_size=5),
    n_items=st.integers(60, 400),
    k=st.integers(1, 30),
)
def test_random_hit_rate_is_hypergeometric(sizes: list[int], n_items: int, k: int) -> None:
    want = np.mean([1 - math.comb(n_items - g, k) / math.comb(n_items, k) for g in sizes])
    assert random_hit_rate_at_k(np.array(sizes), n_items, k) == pytest.approx(want, abs=1e-12)


def test_random_hit_rate_matches_simulation() -> None:
    rng = np.random.default_rng(0)
    n, k, g = 500, 10, 25
    truth = set(range(g))
    hits = [not truth.isdisjoint(rng.choice(n, k, replace=False).tolist()) for _ in range(20_000)]
    assert np.mean(hits) == pytest.approx(random_hit_rate_at_k(np.array([g]), n, k), abs=0.015)
