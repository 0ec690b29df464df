"""SyntheticShop: determinism, funnel shape, arrivals, planted signal and ground truth."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from operators.schema import encode_event
from simulators.catalog import CatalogSpec
from simulators.shop import DEFAULT_START_TS, SyntheticShop
from simulators.visits import VisitSpec

K = 10


@pytest.fixture(scope="module")
def shop_and_events() -> tuple[SyntheticShop, list]:
    shop = SyntheticShop(n_items=1000, n_users=300, seed=7)
    return shop, shop.history(20_000, rate_per_s=20.0)


def test_same_seed_same_catalog_and_events() -> None:
    a, b = SyntheticShop(n_items=300, n_users=80, seed=11), SyntheticShop(n_items=300, n_users=80, seed=11)
    assert a.catalog() == b.catalog()
    new_a: list[dict] = []
    new_b: list[dict] = []
    ev_a = [encode_event(e) for e in a.events(3000, on_new_item=new_a.append)]
    ev_b = [encode_event(e) for e in b.events(3000, on_new_item=new_b.append)]
    assert ev_a == ev_b
    assert new_a == new_b and new_a
    assert a.catalog() == b.catalog()
    assert all(a.ground_truth(u) == b.ground_truth(u) for u in a.user_ids)


def test_other_seed_other_events() -> None:
    a = SyntheticShop(n_items=300, n_users=80, seed=1).history(500)
    b = SyntheticShop(n_items=300, n_users=80, seed=2).history(500)
    assert [e.item_ids() for e in a] != [e.item_ids() for e in b]


def test_events_are_valid_time_ordered_and_unique(shop_and_events) -> None:
    shop, events = shop_and_events
    assert len(events) == 20_000
    ts = np.array([e.ts for e in events])
    assert np.all(np.diff(ts) >= 0)
    assert ts[0] >= DEFAULT_START_TS
    assert len({e.event_id for e in events}) == len(events)
    assert all(isinstance(e.user_id, str) and e.user_id for e in events)
    # rate_per_s sets the ts spacing: 20k events at 20/s span ~1,000 s (plus open sessions' tail)
    assert 800 < ts[-1] - ts[0] < 1200


def test_warm_up_holds_the_rate_from_the_start() -> None:
    """Joining mid-stream: the first minute already runs at the asked rate; cold starts ramp up."""
    for warm_up, lo, hi in ((True, 0.8, 1.25), (False, 0.1, 0.6)):
        shop = SyntheticShop(n_items=500, n_users=200, seed=1)
        ts = np.array([e.ts for e in shop.events(10_000, start_ts=0.0, rate_per_s=50.0, warm_up=warm_up)])
        assert ts[0] >= 0.0
        assert lo * 50 * 20 < (ts < 20.0).sum() < hi * 50 * 20


def test_history_continues_and_end_ts() -> None:
    shop = SyntheticShop(n_items=200, n_users=50, seed=3)
    hist = shop.history(1000, end_ts=DEFAULT_START_TS, rate_per_s=10.0)
    assert hist[0].ts == pytest.approx(DEFAULT_START_TS - 100.0)
    live = list(shop.events(500, start_ts=DEFAULT_START_TS + 10, rate_per_s=10.0))
    assert live[0].ts >= DEFAULT_START_TS + 10
    assert not {e.event_id for e in hist} & {e.event_id for e in live}


def test_funnel_shape() -> None:
    shop = SyntheticShop(n_items=1000, n_users=300, seed=7)
    events = shop.history(10_000, rate_per_s=20.0, warm_up=False)  # whole sessions only
    counts = Counter(e.type for e in events)
    assert set(counts) == {"view", "add_to_cart", "purchase", "pos_purchase", "search"}
    assert counts["view"] > 3 * counts["add_to_cart"] > 3 * counts["purchase"] > 0
    # within a session, each cart follows a view of that item, each purchase follows its cart
    seen: dict[str, set[str]] = defaultdict(set)
    carted: dict[str, set[str]] = defaultdict(set)
    sessions_of: dict[str, str] = {}
    for e in events:
        if e.type == "view":
            seen[e.session_id].add(e.item_id)
        elif e.type == "add_to_cart":
            assert e.item_id in seen[e.session_id]
            assert e.price and e.price > 0
            carted[e.session_id].add(e.item_id)
        elif e.type == "purchase":
            assert e.item_id in carted[e.session_id]
        elif e.type == "pos_purchase":
            assert e.items and e.store_id and e.session_id is None
            assert all(line.quantity >= 1 and line.price > 0 for line in e.items)
        elif e.type == "search":
            assert e.query
        if e.session_id is not None:
            assert sessions_of.setdefault(e.session_id, e.user_id) == e.user_id  # one user per session


def test_new_items_and_users_appear_over_time() -> None:
    shop = SyntheticShop(n_items=300, n_users=100, seed=5)
    announced: dict[str, float] = {}
    first_seen: dict[str, int] = {}

    def on_new(item: dict) -> None:
        assert item["item_id"] not in announced
        announced[item["item_id"]] = item["created_ts"]
        first_seen.setdefault(item["item_id"], -1)

    events = []
    for e in shop.events(10_000, on_new_item=on_new):
        for i in e.item_ids():
            if int(i[1:]) >= 300:
                assert i in announced, f"{i} used before it was announced"
                assert e.ts >= announced[i]
        events.append(e)
    assert shop.n_items == 300 + len(announced) and len(announced) >= 8
    used_new = {i for e in events for i in e.item_ids() if int(i[1:]) >= 300}
    assert len(used_new) >= len(announced) // 2
    new_users = {e.user_id for e in events if int(e.user_id[1:]) >= 100}
    assert shop.n_users > 100 and new_users
    assert all(shop.ground_truth(u) for u in new_users)
    # new items join existing users' ground truth
    assert any(int(i[1:]) >= 300 for u in shop.user_ids[:100] for i in shop.ground_truth(u))
    assert len(shop.catalog(since=300)) == len(announced)


def test_taste_oracle_beats_chance_by_far(shop_and_events) -> None:
    shop, _ = shop_and_events
    users = shop.user_ids[:200]
    chance = shop.random_hit_rate(K, users)
    oracle = shop.hit_rate(shop.taste_recommendations(users, K), K)
    assert 0.05 < chance < 0.4
    assert oracle > 0.95 and oracle > 3 * chance
    assert shop.precision_at_k(shop.taste_recommendations(users, K), K) > 10 * shop.random_precision_at_k(
        users
    )


def test_history_learnable_recommenders_beat_chance(shop_and_events) -> None:
    """Popularity and a per-user 'what they touched + its co-visited items' recommender, learnt from events."""
    shop, events = shop_and_events
    train = events[: len(events) // 2]
    pop = [i for i, _ in Counter(i for e in train for i in e.item_ids()).most_common(K)]
    users = sorted({e.user_id for e in train})
    assert shop.hit_rate(dict.fromkeys(users, pop), K) > 2 * shop.random_hit_rate(K, users)
    assert shop.precision_at_k(dict.fromkeys(users, pop), K) > 2 * shop.random_precision_at_k(users)

    covisit: dict[str, Counter] = defaultdict(Counter)
    last: dict[str, str] = {}
    touched: dict[str, Counter] = defaultdict(Counter)
    for e in train:
        for i in e.item_ids():
            touched[e.user_id][i] += 1
        if e.type == "view":
            if e.session_id in last:
                covisit[last[e.session_id]][e.item_id] += 1
            last[e.session_id] = e.item_id
    recs = {}
    for u in users:
        scores: Counter = Counter(touched[u])
        for i in touched[u]:
            scores.update(covisit[i])
        recs[u] = [i for i, _ in scores.most_common(K)]
    hr, chance = shop.hit_rate(recs, K), shop.random_hit_rate(K, users)
    assert hr > 0.8 and hr > 3 * chance


def test_next_item_predictable_from_previous(shop_and_events) -> None:
    _, events = shop_and_events
    pairs = []
    last: dict[str, str] = {}
    for e in events:
        if e.type == "view":
            if e.session_id in last:
                pairs.append((last[e.session_id], e.item_id))
            last[e.session_id] = e.item_id
    train, test = pairs[: len(pairs) // 2], pairs[len(pairs) // 2 :]
    nxt: dict[str, Counter] = defaultdict(Counter)
    for a, b in train:
        nxt[a][b] += 1
    hits = sum(b in {i for i, _ in nxt[a].most_common(3)} for a, b in test)
    assert hits / len(test) > 0.25  # chance is ~3 / 1000


def test_title_words_and_vectors_carry_category() -> None:
    shop = SyntheticShop(n_items=2000, n_users=10, seed=4, catalog_spec=CatalogSpec(n_categories=10))
    items = shop.catalog()
    cats = np.array([d["category"] for d in items])
    # text: a title word (after the brand) names the category unambiguously
    word_cats: dict[str, set[str]] = defaultdict(set)
    for d in items:
        for w in d["title"].split()[1:-1]:
            word_cats[w].add(d["category"])
    assert all(len(c) == 1 for c in word_cats.values())
    # image-like vector: nearest category centroid recovers the category
    vec = np.array([d["vector"] for d in items])
    names = sorted(set(cats))
    centroids = np.stack([vec[cats == c].mean(axis=0) for c in names])
    pred = np.array(names)[np.argmax(vec @ centroids.T, axis=1)]
    assert (pred == cats).mean() > 0.8
    assert {"item_id", "title", "category", "brand", "price", "on_sale", "tags", "vector"} <= set(items[0])
    assert "vector" not in shop.catalog(vectors=False)[0]


def test_ground_truth_api_errors_and_shapes() -> None:
    shop = SyntheticShop(n_items=100, n_users=10, seed=0, visit_spec=VisitSpec(p_new_user=0.0))
    with pytest.raises(KeyError, match="user_id: not a user of this shop; got 'nobody'"):
        shop.ground_truth("nobody")
    with pytest.raises(KeyError, match="u000010"):
        shop.ground_truth("u000010")
    assert shop.affinity("u000001").shape == (100,)
    assert shop.ground_truth("u000001") <= set(shop.item_ids)
    with pytest.raises(ValueError, match="rate_per_s: must be > 0; got 0"):
        next(shop.events(1, rate_per_s=0))
    with pytest.raises(ValueError, match="n_items=0"):
        SyntheticShop(n_items=0)


def test_drift_changes_tastes_and_groups_deterministically():
    def run() -> tuple[list, list, list]:
        shop = SyntheticShop(n_items=300, n_users=50, seed=9)
        shop.history(2000)
        before = [shop.ground_truth(u) for u in shop.user_ids]
        shop.drift()
        after = [shop.ground_truth(u) for u in shop.user_ids]
        return before, after, [e.item_id for e in shop.events(500)]

    before, after, events = run()
    overlap = sum(len(b & a) for b, a in zip(before, after, strict=True)) / sum(len(b) for b in before)
    assert overlap < 0.4  # most of what users wanted before is not what they want now
    assert run() == (before, after, events)  # same seed, same drift
