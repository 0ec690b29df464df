"""``models.ivf``: spherical k-means lists with exact re-ranking, under adds, moves and removes (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest

from models.ivf import InvertedLists, _codes_of, nearest_list, train_centroids


def _unit(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_train_centroids_is_deterministic_and_checks_its_input():
    v = _unit(2000)
    a = train_centroids(v, 32, seed=3)
    np.testing.assert_array_equal(a, train_centroids(v, 32, seed=3))
    assert a.shape == (32, 8) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    assert train_centroids(v[:5], 32).shape == (5, 8)
    with pytest.raises(ValueError, match="n_lists must be >= 1; got 0"):
        train_centroids(v, 0)
    with pytest.raises(ValueError, match="sample must be 2-D"):
        train_centroids(v[0], 4)
    with pytest.raises(ValueError, match="n_probe must be >= 1; got 0"):
        InvertedLists(a, n_probe=0)


def _check_layout(lists: InvertedLists, vecs: dict[int, np.ndarray]) -> None:
    """Every held row once, in its nearest centroid's list, with its vector; nothing else."""
    assert len(lists) == len(vecs)
    seen = []
    for j in range(len(lists.centroids)):
        s, c = int(lists._start[j]), int(lists._count[j])
        rows = lists._rows[s:s + c].tolist()
        seen += rows
        for p, r in enumerate(rows):
            np.testing.assert_array_equal(lists._vecs[s + p], vecs[r])
            np.testing.assert_array_equal(lists._codes[s + p], _codes_of(vecs[r]))  # the codes follow the vectors
            assert lists._list_of[r] == j and lists._pos_of[r] == p
    assert sorted(seen) == sorted(vecs)


def test_adds_moves_and_removes_keep_the_lists_exact():
    rng = np.random.default_rng(1)
    pool = _unit(3000, seed=1)
    lists = InvertedLists(train_centroids(pool[:500], 16), n_probe=4)
    vecs: dict[int, np.ndarray] = {}
    for step in range(3000):  # lists overflow, move to the block's end, and the block is compacted
        row = int(rng.integers(0, 800))
        if rng.random() < 0.3:
            lists.remove(row)
            vecs.pop(row, None)
        else:
            v = pool[int(rng.integers(0, len(pool)))]
            lists.add(row, v)
            vecs[row] = v
        if step % 500 == 0:
            _check_layout(lists, vecs)
    new = np.arange(1000, 6000, dtype=np.int32)  # a bulk add (install-time repairs)
    lists.add_many(new, pool[new % len(pool)])
    vecs.update({int(r): pool[r % len(pool)] for r in new})
    _check_layout(lists, vecs)
    assert (nearest_list(np.stack([vecs[r] for r in new[:50]]), lists.centroids) == lists._list_of[new[:50]]).all()


def test_vector_of_one_row_equals_vectors_of():
    """The one-row read a query's own vector takes (``VectorIndex._vector``) gives ``vectors_of``'s values after
    adds, moves, removes and relocations; a copy (writing it leaves the block alone); None for a row not held."""
    rng = np.random.default_rng(4)
    pool = _unit(2000, seed=4)
    lists = InvertedLists(train_centroids(pool[:400], 12), n_probe=3)
    for _ in range(2500):
        row = int(rng.integers(0, 600))
        if rng.random() < 0.3:
            lists.remove(row)
        else:
            lists.add(row, pool[int(rng.integers(0, len(pool)))])
    for row in range(-1, 700):
        got = lists.vector_of(row)
        if not lists.holds(row):
            assert got is None
            continue
        want = lists.vectors_of(np.array([row]))[0]
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        got[:] = 9.0
        np.testing.assert_array_equal(lists.vectors_of(np.array([row]))[0], want)


def test_search_tiers_are_exact_within_and_prefixes_across():
    v = _unit(5000, seed=2)
    c = train_centroids(v, 40)
    lists = InvertedLists.from_assignment(c, nearest_list(v, c), v, n_probe=3)
    q = v[10]
    whole, whole_s = lists.search(q, 10_000, exclude_row=10)
    assert sorted(whole.tolist()) == [r for r in range(5000) if r != 10]
    for n in (1, 5, 100, 700, 4999):
        rows, scores = lists.search(q, n, exclude_row=10)
        np.testing.assert_array_equal(rows, whole[:n])
        np.testing.assert_array_equal(scores, whole_s[:n])
    # the first tier is the exact ranking of the 3 nearest lists' rows
    first = np.argsort(-(c @ q), kind="stable")[:3]
    members = np.flatnonzero(np.isin(nearest_list(v, c), first))
    members = members[members != 10]
    exact = members[np.lexsort((members, -(v[members] @ q)))]
    np.testing.assert_array_equal(whole[:len(exact)], exact)
    np.testing.assert_allclose(whole_s[:len(exact)], v[exact] @ q, rtol=1e-5, atol=1e-6)


def test_tied_centroids_keep_the_tiers_disjoint():
    """Duplicate centroids tie at the first tier's cut: every row still comes once, prefixes still hold."""
    v = _unit(3000, seed=4)
    c = train_centroids(v, 24)
    c = np.concatenate([c, c])  # every centroid twice: ties everywhere, the second copy's lists stay empty
    lists = InvertedLists.from_assignment(c, nearest_list(v, c), v, n_probe=5)
    lists.add(5000, c[3].copy())  # the later rows go where the ties put them
    lists.add(5001, c[3].copy())
    for q_row in (0, 1, 2999):
        whole, _ = lists.search(v[q_row], 10_000, exclude_row=q_row)
        assert len(whole) == len(set(whole.tolist())) == len(lists) - 1
        for n in (3, 50, 400):
            np.testing.assert_array_equal(lists.search(v[q_row], n, exclude_row=q_row)[0], whole[:n])


def _block(lists: InvertedLists) -> tuple[np.ndarray, ...]:
    return (lists._rows[:lists._end], lists._vecs[:lists._end], lists._start, lists._cap, lists._count,
            lists._list_of, lists._pos_of)


def test_vectors_placed_in_chunks_give_the_same_block(monkeypatch):
    """``_place`` copies vectors a few at a time (no gathered copy of all): every layout step (bulk
    assignment, overflow moves, compaction, a bulk add) gives the block one copy at once gave."""
    import models.ivf as ivf

    def run() -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng(7)
        v = _unit(3000, seed=7)
        c = train_centroids(v[:600], 16)
        lists = InvertedLists.from_assignment(c, nearest_list(v[:2000], c), v[:2000], n_probe=4)
        out = [*_block(lists)]
        for _ in range(4000):  # overflows move lists to the end; half holes compact the block
            row = int(rng.integers(0, 2500))
            if rng.random() < 0.4:
                lists.remove(row)
            else:
                lists.add(row, v[int(rng.integers(0, 3000))])
        out += _block(lists)
        new = np.arange(5000, 10_000, dtype=np.int32)
        lists.add_many(new, v[new % 3000])
        return (*out, *_block(lists))

    whole = run()
    monkeypatch.setattr(ivf, "_PLACE_CELLS", 8 * 3 + 5)  # 3 rows of 8 floats a chunk: many chunks, a short last one
    chunked = run()
    assert len(whole) == len(chunked)
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_bulk_assignment_holds_no_gathered_copy_of_the_vectors():
    """The new block (vectors and their int8 codes) plus small per-row arrays, not the block plus a copy of every
    vector (64 MB at 1M rows)."""
    import tracemalloc

    v = _unit(100_000, dim=64, seed=8)
    c = train_centroids(v[:4000], 64)
    list_of = nearest_list(v, c)
    tracemalloc.start()
    try:
        lists = InvertedLists.from_assignment(c, list_of, v, n_probe=4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    block = lists._vecs.nbytes + lists._codes.nbytes
    assert block < peak < block + v.nbytes // 2, (peak, block, v.nbytes)


def test_a_bulk_assignment_holds_few_bytes_per_row_beside_its_block(monkeypatch):
    """Issue 14: the order and block positions of a 1M-row assignment were whole int64 arrays (~30 MB beside the
    new block, at the worker's peak); now a sort's int64 indices and two int32 copies (~15 B a row, 20 before)."""
    import tracemalloc

    import models.ivf as ivf

    monkeypatch.setattr(ivf, "_PLACE_CELLS", 1 << 14)  # vectors copied in small chunks: what is left is per row
    n = 300_000
    rng = np.random.default_rng(9)
    v = rng.normal(size=(n, 4)).astype(np.float32)
    c = _unit(64, dim=4, seed=9)
    list_of = nearest_list(v, c)
    list_of[::7] = -1  # rows left out
    tracemalloc.start()
    try:
        lists = InvertedLists.from_assignment(c, list_of, v, n_probe=4)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - held < 17 * n, f"{(peak - held) / n:.1f} B a row of temporaries"
    assert len(lists) == n - len(range(0, n, 7)) and not lists.holds(7) and lists.holds(8)


def test_a_tier_scored_into_its_heap_equals_the_top_of_its_scored_rows():
    """``_score_lists_top`` (search's one pass per tier) gives ``top_rows(*_score_lists(...), k)`` bit for bit:
    the same rows, float32 scores and order, with ``exclude_row`` left out, ties included (duplicate vectors)."""
    from models.ivf import _score_lists, _score_lists_top
    from models.topk import top_rows

    v = _unit(4000, dim=16, seed=6)
    v[2000:2100] = v[100:200]  # exact ties across rows
    v[3000:3050] = v[3050:3100] + np.float32(1e-6)  # near ties: scores closer than the codes can tell apart
    c = train_centroids(v, 30)
    lists = InvertedLists.from_assignment(c, nearest_list(v, c), v, n_probe=4)
    parts = (lists._rows, lists._vecs, lists._start, lists._count)
    for q_row in (0, 150, 2150, 3010, 3999):
        tier = np.argsort(-(c @ v[q_row]), kind="stable")[:6].astype(np.int64)
        for k in (1, 10, 257, 10_000):
            want = top_rows(*_score_lists(*parts, tier, v[q_row], q_row), k)
            # rows skipped by their int8 codes (the search's bound); none skipped (a bound too large; codes not read)
            for err in (lists._code_error(v[q_row]), 1e30, -1.0):
                got = _score_lists_top(*parts, tier, v[q_row], q_row, k, lists._codes, err)
                for w, g in zip(want, got, strict=True):
                    assert g.dtype == w.dtype
                    np.testing.assert_array_equal(g, w)


def test_the_int8_codes_bound_every_rows_score_and_searches_skip_rows():
    """A row's code score is within ``_code_error`` of its exact score (unit vectors, and vectors beyond unit length
    whose codes clip), so a search that skips rows by their codes returns the rows of one that scores every row;
    and at 4,000 rows most rows of a tier are skipped (the bound is tight enough to pay)."""
    from models.ivf import _score_lists

    rng = np.random.default_rng(11)
    for scale in (1.0, 3.0):  # 3.0: elements beyond 1 clip to +-127 (the bound widens with the largest element)
        v = _unit(4000, dim=16, seed=11) * np.float32(scale)
        c = train_centroids(_unit(4000, dim=16, seed=11), 20)
        lists = InvertedLists.from_assignment(c, nearest_list(v, c), v, n_probe=3)
        for q_row in rng.integers(0, 4000, 20).tolist():
            q = _unit(1, dim=16, seed=q_row)[0]
            exact = v @ q
            approx = _codes_of(v).astype(np.float32) @ (q / np.float32(127))
            assert np.abs(exact - approx).max() <= lists._code_error(q)
    v = _unit(4000, dim=16, seed=12)
    c = train_centroids(v, 20)
    lists = InvertedLists.from_assignment(c, nearest_list(v, c), v, n_probe=3)
    tier = np.argsort(-(c @ v[7]), kind="stable")[:3].astype(np.int64)
    rows, scores = _score_lists(lists._rows, lists._vecs, lists._start, lists._count, tier, v[7], 7)
    approx = _codes_of(lists.vectors_of(rows)).astype(np.float32) @ (v[7] / np.float32(127))
    kth = np.sort(scores)[-10]
    assert np.mean(approx + lists._code_error(v[7]) < kth) > 0.5  # rows a top-10 never scores exactly
