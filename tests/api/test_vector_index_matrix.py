"""``VectorIndex`` drops its row matrix once installed lists hold every live row (issue 14's memory: the lists'
copy is the only one) and answers exactly as an index that keeps it, through sets, deletes, rebuilds and the
exact/approximate switch."""

from __future__ import annotations

import numpy as np

from api.vector_index import VectorIndex


def _pair(**kw: object) -> tuple[VectorIndex, VectorIndex]:
    return (VectorIndex(8, background=False, n_probe=3, **kw),  # type: ignore[arg-type]
            VectorIndex(8, background=False, n_probe=3, keep_matrix=True, **kw))  # type: ignore[arg-type]


def _same(a: VectorIndex, b: VectorIndex, ids: list[str], rng: np.random.Generator) -> None:
    assert a.approximate == b.approximate and a.ranking_key == b.ranking_key and len(a) == len(b)
    for item in rng.choice(ids, 6):
        ra, sa = a.similar_rows(str(item), 40)
        rb, sb = b.similar_rows(str(item), 40)
        assert np.array_equal(ra, rb) and np.array_equal(sa, sb)
        wanted = [str(x) for x in rng.choice(ids, 5)]
        for x, y in zip(a.ranking_positions(str(item), wanted), b.ranking_positions(str(item), wanted), strict=True):
            assert np.array_equal(np.asarray(x), np.asarray(y))


def test_answers_equal_the_index_that_keeps_its_matrix():
    rng = np.random.default_rng(5)
    dropped, kept = _pair(exact_below=300)
    ids = [f"i{k}" for k in range(2_000)]
    for k, item in enumerate(ids[:1_000]):
        v = rng.normal(size=8)
        assert dropped.set(item, v) == kept.set(item, v)
        if k % 97 == 0:
            _same(dropped, kept, ids[:k + 1], rng)
    assert dropped.approximate and dropped._buf is None and kept._buf is not None  # lists installed: matrix dropped
    for step in range(2_500):  # changes, deletes below exact_below and back, a 4x growth (a new build)
        item = str(rng.choice(ids))
        if rng.random() < 0.35:
            dropped.delete(item)
            kept.delete(item)
        else:
            v = rng.normal(size=8)
            dropped.set(item, v)
            kept.set(item, v)
        if step % 211 == 0:
            _same(dropped, kept, ids, rng)
    _same(dropped, kept, ids, rng)
    assert dropped._generation == kept._generation >= 2  # the growth built lists again, from a rebuilt matrix


def test_an_exact_query_after_deletes_rebuilds_the_matrix_from_the_lists():
    rng = np.random.default_rng(1)
    dropped, kept = _pair(exact_below=100)
    ids = [f"i{k}" for k in range(150)]
    for item in ids:
        v = rng.normal(size=8)
        dropped.set(item, v)
        kept.set(item, v)
    assert dropped._buf is None
    for item in ids[:80]:  # below exact_below: exact queries over a matrix rebuilt from the lists
        dropped.delete(item)
        kept.delete(item)
    assert not dropped.approximate
    _same(dropped, kept, ids[80:], rng)
    assert dropped._buf is not None
