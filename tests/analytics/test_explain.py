"""Explanations: the contributions are the model's own score terms; the API returns them per item."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
import scipy.sparse as sp

from models.base import Histories
from models.covisit import CoVisitation
from operators.analytics.explain import (
    history_contributions,
    modality_contributions,
    supports_contributions,
    supports_modalities,
)
from operators.model_version import latest_version_path, load_version
from operators.training import train_covisitation
from simulators.producer import EventProducer
from simulators.shop import SyntheticShop
from tests.harness import ApiServer, FlowProcess, make_settings, wait_caught_up, wait_model_list


def tiny_model() -> CoVisitation:
    m = CoVisitation(position_decay=0.5, popularity_weight=0.1)
    c = np.array([[0, .6, .4, 0], [.5, 0, 0, .5], [.2, .3, 0, .5], [0, 0, 1., 0]], dtype=np.float32)
    m.covisit_ = sp.csr_array(c)
    m.popularity_ = np.array([1.0, .5, .25, .1], dtype=np.float32)
    return m


def test_contributions_sum_to_the_models_score():
    m = tiny_model()
    index = {f"i{k}": k for k in range(4)}
    history = ["i0", "i2", "i1"]  # oldest first: weights 0.25, 0.5, 1
    ids, scores = m.recommend(Histories.from_lists([[0, 2, 1]]), 4)
    items = [f"i{k}" for k in ids[0]]
    got = history_contributions(m, index, history, items, top=10)
    for item, score in zip(items, scores[0].tolist(), strict=True):
        assert sum(c.value for c in got[item]) == pytest.approx(score, rel=1e-5)
    # i3 is reached only through i1 (0.5 * 1) and i2 (0.5 * 0.5) plus popularity 0.01
    assert [(c.source, round(c.value, 6)) for c in got["i3"]] == [("i1", 0.5), ("i2", 0.25), ("popularity", 0.01)]
    assert sum(c.share for c in got["i3"]) == pytest.approx(1.0)


def test_repeated_history_items_merge_and_unknown_ids_are_skipped():
    m = tiny_model()
    index = {f"i{k}": k for k in range(4)}
    got = history_contributions(m, index, ["i1", "zz", "i1"], ["i3", "nope"], top=1)
    assert [(c.source, round(c.value, 6)) for c in got["i3"]] == [("i1", 0.75)]  # 0.5 * (0.5 + 1)
    assert got["nope"] == []


def test_models_without_a_matrix_are_refused():
    assert not supports_contributions(object())
    with pytest.raises(ValueError, match="no item-item matrix"):
        history_contributions(object(), {}, [], [])


def test_emde_modality_contributions_are_ablations_through_the_network():
    from models.base import InteractionLog
    from models.emde import EMDE

    rng = np.random.default_rng(0)
    sess, items = [], []
    for k in range(800):  # 4 tastes of 15 items; sessions walk inside a taste
        g, start = rng.integers(4), rng.integers(15)
        for t in range(int(rng.integers(2, 6))):
            sess.append(k)
            items.append(int(g * 15 + (start + t) % 15))
    log = InteractionLog(session_idx=np.array(sess, np.int32), item_idx=np.array(items, np.int32),
                         ts=np.arange(len(items), dtype=np.float64), n_items=60,
                         item_ids=tuple(f"i{k}" for k in range(60)))
    m = EMDE("g=sessions:4x16:2,r=random:4x16", hidden=32, epochs=1, batch_size=256, random_state=0).fit(log)
    assert supports_modalities(m) and not supports_contributions(m)
    index = {f"i{k}": k for k in range(60)}
    got = modality_contributions(m, index, ["i3", "i4", "zz"], ["i5", "i40", "nope"])
    assert got["nope"] == [] and {c.source for c in got["i5"]} == {"modality:g", "modality:r"}
    raw = m.layout_.raw_sketches(m.item_in_cols_, Histories.from_lists([[3, 4]]), m.neighbours_).toarray()
    ablated = raw.copy()
    for view in m.layout_.views:  # g is the first input block of each view
        ablated[:, m.layout_.offset(view):m.layout_.offset(view) + 4 * 16] = 0
    s_full, s_abl = m.score_sketches(np.vstack([raw, ablated]))[:, 5]
    g = next(c for c in got["i5"] if c.source == "modality:g")
    assert g.value == pytest.approx(np.log(s_full) - np.log(s_abl), rel=1e-4)
    positive = [c.share for c in got["i5"] if c.value > 0]
    assert not positive or sum(positive) == pytest.approx(1.0)


@pytest.mark.integration
def test_api_explains_each_item_from_the_model(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=1)
    shop = SyntheticShop(n_items=300, n_users=40, seed=5, start_ts=time.time() - 86400)
    train_covisitation(shop.history(8000), s)
    live = list(shop.events(1500, rate_per_s=50.0))
    catalog = shop.catalog(vectors=False)
    flow = FlowProcess(s, tmp_path / "flow.toml").start()
    try:
        with ApiServer(s) as api, EventProducer.from_settings(s.kafka) as producer:
            producer.send_catalog(catalog)
            producer.send_events(live, progress=False)
            wait_caught_up(s, flow, timeout_s=120)
            c = httpx.Client(base_url=api.url, timeout=10)
            deadline = time.monotonic() + 30
            while c.get("/healthz").json()["catalog_items"] < len(catalog) and time.monotonic() < deadline:
                time.sleep(0.1)
            brand = catalog[0]["brand"]
            r = c.put("/v1/campaigns/sim", json={"scenario": "similar", "n": 8,
                                                 "boosters": f'BOOST 2 IF brand == "{brand}"'})
            assert r.status_code == 201, r.text
            version = load_version(latest_version_path(s.stream.model_dir))
            item = next(e.item_id for e in reversed(live) if e.item_id in version.item_index)
            body = c.get("/v1/recommendations", params={"campaign": "sim", "item_id": item, "explain": "true"}).json()
            assert len(body["explanations"]) == len(body["items"]) == 8
            brands = {d["item_id"]: d["brand"] for d in catalog}
            row = version.model.covisit_[[version.item_index[item]]].toarray()[0]
            for it, ex in zip(body["items"], body["explanations"], strict=True):
                assert ex["item_id"] == it["item_id"] and ex["arm"] == body["arm"] and ex["scenario"] == "similar"
                assert ex["basis"] == "the current item" and ex["model_version"] == version.version
                if ex["fallback"]:
                    continue
                top = ex["contributions"][0]
                assert top["source"] == item  # the only history item of "similar"
                assert top["value"] == pytest.approx(row[version.item_index[it["item_id"]]], rel=1e-5)
                assert (ex["boosters"] == [f'BOOST 2 IF brand == "{brand}"']) == (brands[it["item_id"]] == brand)
                assert ex["boost"] == (2.0 if brands[it["item_id"]] == brand else 1.0)

            user = max({e.user_id for e in live}, key=lambda u: sum(e.user_id == u for e in live))

            plain = wait_model_list(c, user, n=5, explain="true")
            first = plain["explanations"][0]
            assert first["scenario"] == "personalized" and first["contributions"]
            unexplained = c.get("/v1/recommendations", params={"campaign": "sim", "item_id": item}).json()
            assert "explanations" not in unexplained and len(unexplained["items"]) == 8
            bad = c.get("/v1/recommendations", params={"user_id": user, "explain": "maybe"})
            assert bad.status_code == 422 and bad.json()["error"]["field"] == "explain"
    finally:
        flow.stop()
