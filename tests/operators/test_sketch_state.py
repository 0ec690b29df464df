"""operators/sketch_state.py: per-event sparse sketch updates equal the batch sketch of the history."""

from __future__ import annotations

import numpy as np
import pytest

from models.emde import EMDE
from operators.model_version import ModelVersion
from operators.sketch_state import SketchUpdater, supports_sketches
from operators.training import events_to_log
from simulators.shop import SyntheticShop
from state.users import UserState


@pytest.fixture(scope="module")
def version() -> ModelVersion:
    shop = SyntheticShop(n_items=120, n_users=40, seed=2)
    log = events_to_log(shop.history(3000), ["view", "add_to_cart", "purchase", "pos_purchase"])
    model = EMDE("graph=sessions:8x16:2", views=("session", "last", "type:view"), hidden=32, epochs=1,
                 random_state=0).fit(log)
    return ModelVersion(version="v1", model=model, item_ids=list(log.item_ids), manifest={})


def _history(n: int, seed: int, item_ids: list[str]) -> list[tuple[str, str, float]]:
    rng = np.random.default_rng(seed)
    items = [item_ids[i] for i in rng.integers(len(item_ids), size=n)] + ["unknown-item"]
    return [(it, ["view", "add_to_cart"][int(rng.integers(2))], 1.7e9 + j) for j, it in enumerate(items)]


@pytest.fixture(scope="module")
def knn_version() -> ModelVersion:
    """The best offline configuration: neighbour views (``knn:session``, ``knn:last``) too."""
    shop = SyntheticShop(n_items=120, n_users=40, seed=2)
    log = events_to_log(shop.history(3000), ["view", "add_to_cart", "purchase", "pos_purchase"])
    model = EMDE("graph=sessions:8x16:2", views=("session", "last", "knn:session", "knn:last"), hidden=32,
                 epochs=1, random_state=0, knn_k=5).fit(log)
    return ModelVersion(version="v1", model=model, item_ids=list(log.item_ids), manifest={})


@pytest.mark.parametrize("which", ["version", "knn_version"])
@pytest.mark.parametrize("chunks", [[1] * 12, [5, 7], [12]])
def test_per_event_folding_equals_batch_rebuild(request, which, chunks):
    version = request.getfixturevalue(which)
    up = SketchUpdater(version, prune_below=0.0)
    events = _history(11, 0, version.item_ids)
    inc = UserState()
    up.rebuild([inc])  # empty history: an empty sketch of this version
    start = 0
    for size in chunks:
        new = events[start:start + size]
        start += size
        for it, ty, t in new:
            inc.items.append(it), inc.types.append(ty), inc.ts.append(t)
        up.fold(inc, [e[0] for e in new], [e[1] for e in new], [e[2] for e in new])
    batch = UserState(items=list(inc.items), types=list(inc.types), ts=list(inc.ts))
    up.rebuild([batch])
    a, b = up.matrix([inc]).toarray(), up.matrix([batch]).toarray()
    assert a.shape == (1, version.model.layout_.input_dim)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    lay = version.model.layout_
    for view in lay.views:  # every view is filled, the neighbour views too
        assert np.count_nonzero(a[0, lay.offset(view):lay.offset(view) + lay.view_dim]) > 0, view


def test_version_change_rebuilds_lazily(version):
    up = SketchUpdater(version)
    st = UserState(items=[version.item_ids[0]], types=["view"], ts=[1.7e9])
    assert supports_sketches(version)
    up.fold(st, [version.item_ids[0]], ["view"], [1.7e9])
    assert st.sketch_version == "v1" and st.sketch_cols
    scores = version.model.recommend_sketches(up.matrix([st]), 5)
    assert scores[0].shape == (1, 5) and (scores[0] >= 0).all()


def test_user_embedding_is_m_prime_q_of_the_history(version):
    """M′·Q: the folded user embedding equals the normalised decayed sum of the items' Cleora vectors."""
    from operators.training import cleora_item_vectors, events_to_log
    from operators.user_embedding import EmbeddingUpdater, user_vectors

    shop = SyntheticShop(n_items=120, n_users=40, seed=2)
    log = events_to_log(shop.history(3000), ["view", "add_to_cart", "purchase", "pos_purchase"])
    q = cleora_item_vectors(log, dim=16)
    assert q.shape == (log.n_items, 16) and np.allclose(np.linalg.norm(q[np.abs(q).sum(1) > 0], axis=1), 1, atol=1e-5)
    v = ModelVersion(version="v1", model=version.model, item_ids=list(log.item_ids), manifest={}, item_vectors=q)
    up = EmbeddingUpdater(v, alpha=0.5)
    hist = [e[0] for e in _history(6, 1, v.item_ids)]
    one_by_one, batch = UserState(), UserState()
    for it in hist:
        one_by_one.items.append(it)
        up.fold(one_by_one, [it], ["view"], [0.0])
    batch.items.extend(hist)
    up.fold(batch, hist, ["view"] * len(hist), [0.0] * len(hist))
    assert one_by_one.embedding == batch.embedding  # bit-identical however batched
    known = [v.item_index[i] for i in hist if i in v.item_index]
    w = 0.5 ** np.arange(len(known) - 1, -1, -1)
    want = (w[:, None] * q[known]).sum(0)
    np.testing.assert_allclose(user_vectors([batch], 16)[0], want / np.linalg.norm(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", ["version", "knn_version"])
def test_folding_with_pruning_is_bit_identical_however_batched(request, which):
    """With the default pruning, long histories: values pruned and re-added within one call
    decay once per event, so every batching gives the same float32 sketch."""
    version = request.getfixturevalue(which)
    up = SketchUpdater(version)  # prune_below 1e-4: columns drop out after ~90 positions
    events = _history(299, 3, version.item_ids)
    results = []
    for chunk in (1, 37, 300):
        st = UserState()
        for start in range(0, len(events), chunk):
            new = events[start:start + chunk]
            for it, ty, t in new:
                st.items.append(it), st.types.append(ty), st.ts.append(t)
            up.fold(st, [e[0] for e in new], [e[1] for e in new], [e[2] for e in new])
        results.append(up.matrix([st]).toarray())
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])
    batch = UserState(items=[e[0] for e in events], types=[e[1] for e in events], ts=[e[2] for e in events])
    up.rebuild([batch])  # the whole history at once: equal up to the pruned tail
    np.testing.assert_allclose(results[0], up.matrix([batch]).toarray(), atol=2e-4)


def test_a_new_user_with_more_events_than_the_kept_history_counts_each_once(version):
    """A first batch longer than ``history_len`` (a big basket): nothing is folded twice."""
    up = SketchUpdater(version, prune_below=0.0)
    events = _history(59, 4, version.item_ids)
    kept = 40  # the user state keeps only the last 40 items, the batch has 60
    st = UserState(items=[e[0] for e in events][-kept:], types=[e[1] for e in events][-kept:],
                   ts=[e[2] for e in events][-kept:])
    up.fold(st, [e[0] for e in events], [e[1] for e in events], [e[2] for e in events])
    one_by_one = UserState()
    for it, ty, t in events:
        one_by_one.items.append(it), one_by_one.types.append(ty), one_by_one.ts.append(t)
        up.fold(one_by_one, [it], [ty], [t])
    np.testing.assert_array_equal(up.matrix([st]).toarray(), up.matrix([one_by_one]).toarray())


def test_a_model_with_the_past_view_is_scored_from_history_not_folded():
    """The fold kernel has no ``past`` view (the official EMDE input): such a version is not sketched per
    event (the stream scores it with ``recommend`` on the kept history) instead of being folded wrongly."""
    shop = SyntheticShop(n_items=60, n_users=20, seed=3)
    log = events_to_log(shop.history(600), ["view", "add_to_cart", "purchase", "pos_purchase"])
    model = EMDE("graph=sessions:4x16:2", views=("past", "last"), view_norm="row", hidden=16, epochs=1,
                 random_state=0).fit(log)
    past = ModelVersion(version="v2", model=model, item_ids=list(log.item_ids), manifest={})
    assert not supports_sketches(past)
    with pytest.raises(ValueError, match="no EMDE sketch layout the stream folds"):
        SketchUpdater(past)
