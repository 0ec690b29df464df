"""The prefix walk (``api.serving._from_model``) over the visual arm's approximate ranking (issue 14, 1M items):
with the vector index above ``exact_below`` (inverted lists), the lists the walk gives are still those of the
walk over the whole ranking, and its candidates are that ranking's prefix."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from api.candidate_cache import CandidateCache
from api.catalog import CatalogView
from api.iql import RequestContext
from api.serving import _bind, _from_model
from api.strategies import Inputs, model_ranking, ranking_source, run_strategy
from api.vector_index import VectorIndex
from state.campaigns import Arm, Campaign
from tests.api.test_serving_walk import _whole_walk


@pytest.fixture(scope="module")
def svc() -> SimpleNamespace:
    rng = np.random.default_rng(11)
    n = 4000
    ids = [f"i{j:05d}" for j in range(n)]
    view = CatalogView()
    view.vectors = VectorIndex(exact_below=1000, background=False)
    cats = rng.integers(0, 6, n)
    centres = rng.normal(size=(30, 8))
    vecs = (centres[rng.integers(0, 30, n)] + 0.4 * rng.normal(size=(n, 8))).round(2)
    vecs[::9] = vecs[0]  # exact duplicates: tied cosines
    for j, item_id in enumerate(ids):
        view.on_update(item_id, {"item_id": item_id, "category": f"c{cats[j]}", "price": float(rng.uniform(1, 100)),
                                 "on_sale": bool(rng.random() < 0.2), "hidden": bool(rng.random() < 0.03),
                                 "vector": vecs[j].tolist()})
    view.sync()
    for j in rng.choice(n, 200, replace=False):  # deletes and re-sets after the lists were built
        item_id = ids[int(j)]
        if j % 2:
            view.on_update(item_id, None)
        else:
            view.on_update(item_id, {"item_id": item_id, "category": f"c{cats[j]}", "price": 10.0,
                                     "vector": (vecs[int(j)] + 0.5).tolist()})
    view.sync()
    assert view.vectors.approximate
    return SimpleNamespace(models=SimpleNamespace(current=lambda: None), catalog_view=view,
                           candidates=CandidateCache(), ids=ids)


@pytest.mark.parametrize(("max_price", "boosters", "need"), [(100.0, "", 10), (30.0, "BOOST 3 IF on_sale == true", 10),
                                                             (5.0, "", 10), (60.0, "", 300), (2.0, "", 10)])
@pytest.mark.parametrize("few_selected", [0, 4096], ids=["prefix-walk", "few-by-position"])
def test_prefix_walk_equals_the_whole_ranking_walk_on_the_ann_ranking(svc, max_price, boosters, need, few_selected,
                                                                     monkeypatch):
    import api.serving as serving

    monkeypatch.setattr(serving, "FEW_SELECTED", few_selected)
    campaign = Campaign("c", "similar", [Arm("a", "visual")], filter="category == context.item.category AND price < $p",
                        boosters=boosters)
    rng = np.random.default_rng(int(max_price * 10) + need)
    for j in rng.choice(len(svc.ids), 30, replace=False):
        item_id = svc.ids[j]
        exclude = {item_id, *(svc.ids[int(x)] for x in rng.integers(0, len(svc.ids), 3))}
        inputs = Inputs(item_id=item_id)
        ctx = RequestContext(item=svc.catalog_view.item_attributes(item_id), params={"p": max_price})
        want = _whole_walk(svc, campaign, ctx, "visual", inputs, need, exclude)
        got = _from_model(_bind(svc, campaign, ctx, inputs), "visual", {}, need, exclude)
        assert want is not None and got is not None
        assert got[0] == want[0], item_id
        np.testing.assert_array_equal(got[1], want[1])


def test_candidates_are_the_prefix_of_the_model_ranking(svc):
    for item_id in svc.ids[:50:7]:
        ranking = model_ranking("visual", svc, Inputs(item_id=item_id), {})
        assert ranking is not None
        whole = list(ranking[0])
        ids, scores = run_strategy("visual", svc, Inputs(item_id=item_id), {}, 44)
        assert list(ids) == whole[:len(ids)]
        assert item_id not in whole


def test_ranking_source_names_the_lists():
    view = CatalogView()
    view.vectors = VectorIndex(exact_below=100)  # a background build
    svc = SimpleNamespace(models=SimpleNamespace(current=lambda: None), catalog_view=view, candidates=CandidateCache())
    rng = np.random.default_rng(0)
    for j in range(300):
        view.on_update(f"i{j}", {"item_id": f"i{j}", "vector": rng.normal(size=4).tolist()})
    view.sync()
    assert view.vectors.wait_built(60.0)
    source = ranking_source("visual", svc)
    assert source == ("catalog", f"{view.version}.{view.vectors.ranking_key}") and view.vectors.ranking_key >= 1
