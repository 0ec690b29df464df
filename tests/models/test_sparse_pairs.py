"""Pair lookups equal scipy's fancy indexing and sparse products, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from models.sparse_pairs import history_pair_sums, pair_values


def _random_csr(rng: np.random.Generator, n: int, density: float) -> sp.csr_array:
    m = sp.random_array((n, n), density=density, format="csr", dtype=np.float32, rng=rng)
    m.sum_duplicates()
    return sp.csr_array(m)


def test_pair_values_equal_fancy_indexing() -> None:
    rng = np.random.default_rng(0)
    m = _random_csr(rng, 60, 0.1)
    src, dst = rng.integers(0, 60, 5000), rng.integers(0, 60, 5000)
    np.testing.assert_array_equal(pair_values(m, src, dst), np.asarray(m[src, dst]).ravel())
    order = np.concatenate([np.arange(m.indptr[r], m.indptr[r + 1])[::-1] for r in range(60)])  # each row reversed
    unsorted = sp.csr_array((m.data[order], m.indices[order], m.indptr), shape=m.shape)
    assert not unsorted.has_sorted_indices
    got = pair_values(unsorted, src, dst)
    np.testing.assert_array_equal(got, np.asarray(unsorted.toarray()[src, dst]).ravel())


def test_history_pair_sums_equal_the_sparse_product() -> None:
    rng = np.random.default_rng(1)
    m = _random_csr(rng, 80, 0.2)
    q = 30
    items = rng.integers(0, 80, 200)
    qrows = np.sort(rng.integers(0, q, 200))
    w = sp.csr_array((rng.random(200).astype(np.float32), (qrows, items)), shape=(q, 80))  # duplicates summed
    rows, cols = rng.integers(0, q, 3000), rng.integers(0, 80, 3000)
    want = np.asarray((w @ m)[rows, cols], dtype=np.float32).ravel()
    np.testing.assert_array_equal(history_pair_sums(m, w, rows, cols), want)


def test_lookups_refuse_indices_outside_the_matrix() -> None:
    m = sp.csr_array(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="column indices"):
        pair_values(m, np.array([0]), np.array([4]))
    with pytest.raises(ValueError, match="row indices"):
        pair_values(m, np.array([-1]), np.array([0]))
    with pytest.raises(ValueError, match="one length"):
        history_pair_sums(m, sp.csr_array((2, 4), dtype=np.float32), np.array([0, 1]), np.array([0]))
    assert pair_values(m, np.array([], np.int64), np.array([], np.int64)).shape == (0,)


def test_history_pair_sums_of_sorted_pairs_equal_the_sparse_product() -> None:
    """Pairs sorted by query then column (the fusion's pools) take the galloping kernel: same bits."""
    rng = np.random.default_rng(2)
    m = _random_csr(rng, 300, 0.3)
    q = 40
    lens = rng.integers(0, 12, q)
    qrows = np.repeat(np.arange(q), lens)
    w = sp.csr_array((rng.random(len(qrows)).astype(np.float32), (qrows, rng.integers(0, 300, len(qrows)))),
                     shape=(q, 300))
    keys = np.unique(rng.integers(0, q * 300, 4000))
    rows, cols = keys // 300, keys % 300
    cols[rows == 3] = 299  # a run of one repeated column, past every row's last entry
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    want = np.asarray((w @ m)[rows, cols], dtype=np.float32).ravel()
    np.testing.assert_array_equal(history_pair_sums(m, w, rows, cols), want)
