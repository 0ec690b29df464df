"""``api.vector_index.VectorIndex``: cosine neighbours over one growing float32 matrix, through inserts,
replacements, deletes and re-inserts (issue 14: no per-item arrays, no copy of the matrix per change)."""

from __future__ import annotations

import numpy as np

from api.vector_index import VectorIndex
from models.topk import topk


def test_similar_equals_a_dense_reference_through_changes():
    rng = np.random.default_rng(3)
    index = VectorIndex()
    ref: dict[str, np.ndarray] = {}
    order: list[str] = []
    for step in range(600):
        item = f"i{int(rng.integers(0, 300))}"
        if rng.random() < 0.2:
            index.delete(item)
            ref.pop(item, None)
            continue
        v = rng.normal(size=8).round(1).astype(np.float32)
        assert index.set(item, v.tolist()) == bool(np.linalg.norm(v) > 0)
        if np.linalg.norm(v) > 0:
            ref[item] = v / np.float32(np.linalg.norm(v))
            if item not in order:
                order.append(item)
        else:
            ref.pop(item, None)
        if step % 50 == 0 and ref:
            assert len(index) == len(ref)
            query = next(iter(ref))
            matrix = np.stack([ref.get(i, np.zeros(8, np.float32)) for i in order])
            scores = matrix @ ref[query]
            scores[[i not in ref for i in order]] = -np.inf
            scores[order.index(query)] = -np.inf
            idx, val = topk(scores[None, :], 20)
            keep = idx[0] >= 0
            ids, got = index.similar(query, 20)
            assert ids == [order[i] for i in idx[0][keep]]
            np.testing.assert_allclose(got, val[0][keep], rtol=1e-6)
    assert index.set("bad", [1.0, 2.0]) is False  # wrong length: refused
    assert index.similar("unknown", 5)[0] == []
