"""EMDE in the stream: per-event sketches in RocksDB, batched scoring, and an add-to-cart that
pulls the user's list towards the item's category."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import msgspec
import pytest

from operators.training import train_model
from simulators.producer import EventProducer
from simulators.shop import SyntheticShop
from tests.harness import ApiServer, FlowProcess, dump_state, make_settings, wait_caught_up, wait_model_list

pytestmark = pytest.mark.integration

SMALL_EMDE = {"modalities": "graph=sessions:16x32:2,seq=transitions:16x32:2", "views": ("session", "last"),
              "hidden": 256, "epochs": 2, "progress": False}


def test_emde_sketches_in_state_and_add_to_cart_moves_the_list(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=2)
    shop = SyntheticShop(n_items=400, n_users=150, seed=4)
    history = shop.history(15000)
    train_items = {i for e in history for i in e.item_ids()}
    version = train_model(history, s, "emde", **SMALL_EMDE).name
    category = {it["item_id"]: it["category"] for it in shop.catalog()}
    live = list(shop.events(3000, rate_per_s=5.0))
    flow = FlowProcess(s, tmp_path / "flow.toml").start()
    try:
        with ApiServer(s) as api, EventProducer.from_settings(s.kafka) as p, httpx.Client(base_url=api.url) as c:
            p.send_events(live, progress=False)
            wait_caught_up(s, flow, timeout_s=120)
            user = Counter(e.user_id for e in live).most_common(1)[0][0]
            before = wait_model_list(c, user, n=20)
            assert before["model_version"] == version and before["source"].startswith("model")
            cats_before = Counter(category.get(i["item_id"]) for i in before["items"])
            # the category the list shows least of: add three of its items to the cart
            target = min(set(category.values()), key=lambda k: (cats_before.get(k, 0), k))
            items = [i for i, k in category.items() if k == target][:3]
            last = live[-1]
            for j, item in enumerate(items):
                p.send(msgspec.structs.replace(last, event_id=f"cart-{j}", type="add_to_cart", user_id=user,
                                               item_id=item, items=None, ts=last.ts + 1 + j))
            p.flush()
            deadline = time.monotonic() + 10
            while (after := c.get("/v1/recommendations", params={"user_id": user, "n": 20}).json()
                   )["last_event_ts"] != last.ts + 3:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            cats_after = Counter(category.get(i["item_id"]) for i in after["items"])
            assert cats_after[target] > cats_before.get(target, 0), (target, cats_before, cats_after)
    finally:
        flow.stop()
    state = dump_state(s)
    users = [st for part in state.values() for st in part["users"].values()]
    assert all(st.sketch_version == version for st in users)
    known = set(category) & set(train_items)
    with_known = [st for st in users if known & set(st.items)]
    assert len(with_known) > 100 and all(st.sketch_cols for st in with_known)
    # M'.Q: every user with a known item has an inductive embedding from the version's Cleora vectors
    assert all(st.embedding_version == version and len(st.embedding) > 0 for st in with_known)
    per_user = sum(len(st.sketch_cols) + len(st.sketch_vals) for st in users) / len(users)
    assert per_user < 64 * 1024
