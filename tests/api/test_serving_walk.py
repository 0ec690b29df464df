"""``api.serving._from_model`` walks only the prefix of the arm's ranking it needs (issue 14, 1M items):
the lists it gives are the same as the walk over the whole ranking it replaced, pinned here on a
random catalog with selective filters, boosters, excluded items and tied scores."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from api.candidate_cache import CandidateCache
from api.catalog import CatalogView
from api.iql import RequestContext
from api.serving import _bind, _from_model, _Request, _select
from api.strategies import Inputs, LazyIds, model_ranking
from models.base import InteractionLog
from models.covisit import CoVisitation
from operators.model_version import ModelVersion
from state.campaigns import Arm, Campaign


def _unbound(svc: Any, campaign: Campaign, ctx: RequestContext) -> _Request:
    """A request whose filter and booster keys were not bound first: ``_select`` computes them per list."""
    return _Request(svc, campaign, ctx, Inputs(), None, None)


def _whole_walk(svc: Any, campaign: Campaign, ctx: RequestContext, strategy: str, inputs: Inputs,
                need: int, exclude: set[str]) -> tuple[list[str], np.ndarray] | None:
    """The walk before issue 14's change: the whole ranking, in chunks of 8 * need (>= 256), x4 each."""
    ranking = model_ranking(strategy, svc, inputs, {})
    if ranking is None:
        return None
    all_ids, all_scores = ranking
    out_ids: list[str] = []
    out_s: list[np.ndarray] = []
    start, chunk = 0, max(8 * need, 256)
    while start < len(all_ids) and len(out_ids) < need:
        ids, s = _select(_unbound(svc, campaign, ctx), all_ids[start:start + chunk],  # keys computed per list
                          all_scores[start:start + chunk], exclude)
        out_ids += ids
        out_s.append(s)
        start, chunk = start + chunk, chunk * 4
    return out_ids, (np.concatenate(out_s) if out_s else np.zeros(0))


@pytest.fixture(scope="module")
def svc() -> SimpleNamespace:
    rng = np.random.default_rng(7)
    n_items, n_catalog = 3000, 3100  # 100 catalog items the model does not know; 50 model items not in the catalog
    ids = [f"i{j:05d}" for j in range(n_catalog)]
    view = CatalogView()
    cats = rng.integers(0, 12, n_catalog)
    vecs = rng.normal(size=(n_catalog, 4)).round(1)  # coarse: many tied cosines
    vecs[::7] = vecs[0]  # and exact duplicates
    for j, item_id in enumerate(ids):
        if 3000 <= j < 3050:
            continue
        view.on_update(item_id, {"item_id": item_id, "category": f"c{cats[j]}", "price": float(rng.uniform(1, 100)),
                                 "on_sale": bool(rng.random() < 0.2), "hidden": bool(rng.random() < 0.03),
                                 "vector": vecs[j].tolist()})
    view.sync()
    n_sessions = 4000
    sess = np.repeat(np.arange(n_sessions, dtype=np.int32), 5)
    item = rng.integers(0, n_items, len(sess)).astype(np.int32)
    ts = np.round(1.7e9 + rng.uniform(0, 1e6, len(sess)), -4)  # coarse times: tied popularity values
    order = np.lexsort((ts, sess))
    model_ids = [*ids[:2950], *(f"gone{j}" for j in range(50))]
    log = InteractionLog(session_idx=sess[order], item_idx=item[order], ts=ts[order], n_items=n_items,
                         item_ids=tuple(model_ids))
    version = ModelVersion("v1", CoVisitation().fit(log), model_ids, {})
    return SimpleNamespace(models=SimpleNamespace(current=lambda: version), catalog_view=view,
                           candidates=CandidateCache(), ids=ids, cats=cats)


@pytest.mark.parametrize("few_selected", [0, 4096], ids=["prefix-walk", "few-by-position"])
@pytest.mark.parametrize("strategy", ["similar", "session", "visual"])
@pytest.mark.parametrize(("max_price", "boosters", "need"), [(100.0, "", 10), (30.0, "BOOST 3 IF on_sale == true", 10),
                                                             (5.0, "BOOST 2 IF on_sale == true", 10), (60.0, "", 300),
                                                             (2.0, "", 10)])
def test_prefix_walk_equals_the_whole_ranking_walk(svc, strategy, max_price, boosters, need, few_selected, monkeypatch):
    """Both ways ``_from_model`` applies a filter give the whole walk's list: the prefix walk, and (a filter
    selecting at most ``FEW_SELECTED`` items; every filter here) the selected items' positions in the ranking."""
    import api.serving as serving

    monkeypatch.setattr(serving, "FEW_SELECTED", few_selected)
    campaign = Campaign("c", "similar", [Arm("a", strategy)], filter="category == context.item.category AND price < $p",
                        boosters=boosters)
    rng = np.random.default_rng(int(max_price * 10) + need)
    for j in rng.choice(len(svc.ids), 40, replace=False):
        item_id = svc.ids[j]
        exclude = {item_id, *(svc.ids[int(x)] for x in rng.integers(0, len(svc.ids), 3))}
        inputs = Inputs(item_id=item_id, session=(item_id,) if strategy == "session" else ())
        ctx = RequestContext(item=svc.catalog_view.item_attributes(item_id), params={"p": max_price})
        want = _whole_walk(svc, campaign, ctx, strategy, inputs, need, exclude)
        got = _from_model(_bind(svc, campaign, ctx, inputs), strategy, {}, need, exclude)
        assert want is not None and got is not None
        assert got[0] == want[0], (item_id, strategy)
        np.testing.assert_array_equal(got[1], want[1])


def test_no_filter_and_unknown_items(svc):
    campaign = Campaign("c", "similar", [Arm("a", "similar")])
    for item_id in ("i00010", "i03020", "gone3", "nope"):
        inputs = Inputs(item_id=item_id)
        ctx = RequestContext(item=svc.catalog_view.item_attributes(item_id))
        want = _whole_walk(svc, campaign, ctx, "similar", inputs, 10, {item_id})
        got = _from_model(_bind(svc, campaign, ctx, inputs), "similar", {}, 10, {item_id})
        assert got is not None and want is not None
        assert got[0] == want[0]
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("few_selected", [0, 4096])
def test_the_walk_stops_once_the_filter_has_nothing_more_to_give(svc, monkeypatch, few_selected):
    """A filter that selects no item asks for no ranking; one that selects a few stops once it has them
    all, with the same list as the whole walk (a request parameter must not make each request rank the
    whole catalog); at most ``FEW_SELECTED`` of them are found by position in one whole ranking."""
    import api.serving as serving

    monkeypatch.setattr(serving, "FEW_SELECTED", few_selected)

    asked: list[int | None] = []

    def counting(strategy, svc_, inputs, params, n=None):
        asked.append(n)
        return model_ranking(strategy, svc_, inputs, params, n)

    monkeypatch.setattr(serving, "model_ranking", counting)
    campaign = Campaign("c", "similar", [Arm("a", "visual")], filter="category == context.item.category AND price < $p")
    item_id = "i00010"
    inputs = Inputs(item_id=item_id)
    ctx = RequestContext(item=svc.catalog_view.item_attributes(item_id), params={"p": 0.5})  # prices are >= 1
    got = _from_model(_bind(svc, campaign, ctx, inputs), "visual", {}, 10, {item_id})
    assert got is not None and got[0] == [] and len(got[1]) == 0
    assert asked == []
    ctx = RequestContext(item=svc.catalog_view.item_attributes(item_id), params={"p": 3.0})  # a few items
    got = _from_model(_bind(svc, campaign, ctx, inputs), "visual", {}, 10, {item_id})
    want = _whole_walk(svc, campaign, ctx, "visual", inputs, 10, {item_id})
    assert got is not None and want is not None
    assert 0 < len(got[0]) < 10 and got[0] == want[0]
    if few_selected:
        assert asked == []  # the selected items' positions in the visual ranking are counted: no ranking asked
    else:
        assert None not in asked  # never the whole ranking: the walk stopped at the last selected item


@pytest.mark.parametrize("campaign_filter", ["", "category == context.item.category AND price < $p"])
def test_selection_by_item_idx_equals_selection_by_id(svc, campaign_filter):
    """``_select`` reads a model ranking (``LazyIds``) by item_idx and excludes the request's items by item_idx:
    the same list as from the ranking's id strings, also for model items the catalog does not know (``gone*``),
    excluded or not."""
    campaign = Campaign("c", "similar", [Arm("a", "similar")], filter=campaign_filter,
                        boosters="BOOST 2 IF on_sale == true")
    rng = np.random.default_rng(3)
    for item_id in ("i00010", "i00500", "i02000"):
        ranking = model_ranking("similar", svc, Inputs(item_id=item_id), {})
        assert ranking is not None
        lazy, scores = ranking
        assert isinstance(lazy, LazyIds)
        names = list(lazy)
        gone = [x for x in names if x.startswith("gone")]
        assert gone  # the ranking holds ids the catalog does not know
        for exclude in ({item_id}, {item_id, gone[0], names[3]}, {"nope", names[0]}, set()):
            ctx = RequestContext(item=svc.catalog_view.item_attributes(item_id), params={"p": 50.0})
            start = int(rng.integers(0, 100))
            bound = _bind(svc, campaign, ctx, Inputs(item_id=item_id))
            got = _select(bound, lazy[start:start + 2000], scores[start:start + 2000], exclude)
            # the reference: every candidate by its id string, the excluded ids removed afterwards by string
            ids, s = _select(bound, names[start:start + 2000], scores[start:start + 2000], set())
            kept = [j for j, x in enumerate(ids) if x not in exclude]
            assert got[0] == [ids[j] for j in kept]
            np.testing.assert_array_equal(got[1], s[kept])
            if not campaign_filter:
                assert set(gone[1:]) - exclude <= set(got[0]) | set(names[:start]) | set(names[start + 2000:])


def test_cached_candidates_are_named_by_the_version_serving_the_request(svc):
    """The candidate cache keeps positions, not the model version's id list: a version replaced by an equal one
    under the same version string (the catalog overlay does this) is not kept alive by cached candidates, and a
    cache hit is named through the version now serving."""
    from api.strategies import run_strategy

    first = svc.models.current()
    again = ModelVersion(first.version, first.model, list(first.item_ids), {})
    ids1, s1 = run_strategy("similar", svc, Inputs(item_id="i00010"), {}, 40)
    old_current = svc.models.current
    svc.models.current = lambda: again
    try:
        ids2, s2 = run_strategy("similar", svc, Inputs(item_id="i00010"), {}, 40)
    finally:
        svc.models.current = old_current
    assert isinstance(ids2, LazyIds) and ids2._names is again.item_ids
    assert list(ids1) == list(ids2)
    np.testing.assert_array_equal(s1, s2)
    for value in svc.candidates._entries.values():
        assert all(isinstance(part, np.ndarray) for part in value)


@pytest.mark.parametrize("boosters", ["", "BOOST 2 IF on_sale == true", "BOOST 3 IF on_sale == true BOOST 0.5 IF price < 20"])
@pytest.mark.parametrize("campaign_filter", ["", "category == context.item.category AND price < $p"])
def test_bound_keys_select_the_same_lists_and_compute_no_key_again(svc, campaign_filter, boosters, monkeypatch):
    """``_select`` finds the filter's and boosters' bitmaps through the keys ``_bind`` made for the request: no
    ``BitmapCache.key`` per filtered list (the arm's, each chunk of a walk, the fallback's), and the same lists as
    with every key computed again (``(None, None)``: the path before the keys were passed)."""
    campaign = Campaign("c", "similar", [Arm("a", "similar")], filter=campaign_filter, boosters=boosters)
    bitmaps = svc.catalog_view.bitmaps
    key = bitmaps.key
    calls: list[object] = []
    monkeypatch.setattr(bitmaps, "key", lambda node, ctx: calls.append(node) or key(node, ctx))
    for item_id in ("i00010", "i00500", "i02000"):
        ranking = model_ranking("similar", svc, Inputs(item_id=item_id), {})
        assert ranking is not None
        lazy, scores = ranking
        ctx = RequestContext(item=svc.catalog_view.item_attributes(item_id), params={"p": 50.0})
        bound = _bind(svc, campaign, ctx, Inputs(item_id=item_id))
        n_bound = len(calls)
        assert n_bound == bool(campaign_filter) + boosters.count("BOOST")
        for lo, hi in ((0, 44), (0, 300), (300, 1500)):  # below and from the dense threshold (128)
            del calls[:]
            got = _select(bound, lazy[lo:hi], scores[lo:hi], {item_id})
            assert calls == []
            want = _select(_unbound(svc, campaign, ctx), lazy[lo:hi], scores[lo:hi], {item_id})
            assert got[0] == want[0]
            np.testing.assert_array_equal(got[1], want[1])
        del calls[:]
