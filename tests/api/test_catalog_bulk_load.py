"""``CatalogView.load_initial`` (issue 14: the catalog bulk-built from the table's bytes on the reader
thread) answers every IQL filter, availability and attribute look-up as the per-item path
(``on_update`` + ``sync``) does on the same catalog, before and after live changes; and the
columns' one-item-per-value form (no BitMap per distinct title) answers as a plain dict of sets."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from api.catalog import CatalogView, sync_forever
from api.iql import RequestContext
from api.iql.columns import CategoricalColumn, ListColumn
from api.vector_index import VectorIndex
from operators.kafka import TopicSpec, ensure_topics
from operators.settings import ApiSettings
from operators.topic_table import TopicTable

FILTERS = [
    "title == 'Acme shoe 7'",
    "title IN ('Acme shoe 7', 'shared title', 'Bolt hat 123', 'nobody')",
    "title != 'shared title'",
    "title == 'shared title' AND price < 50",
    "title == context.item.title",
    "category == context.item.category AND price < $max_price",
    "category IN ('shoe', 'hat') AND NOT on_sale",
    "tags CONTAINS 'gift'",
    "tags CONTAINS 'sku-17' OR tags CONTAINS 'sku-3'",
    "tags ANY ['gift', 'sku-5']",
    "tags ALL ['gift', 'sku-8']",
    "price >= 20 AND price <= 70",
    "created_ts > 1700000500",
    "sku == 'S-42' OR sku == 'S-43'",
    "title IS NULL",
    "stock > 3",
]


def _catalog(n: int, seed: int) -> list[tuple[str, object]]:
    """(key, value) messages: unique titles, a few shared, unique list elements, hidden and sold-out
    items, type conflicts (rejected), a non-object, a missing title."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, object]] = []
    for j in range(n):
        item: dict[str, Any] = {
            "item_id": f"i{j}",
            "title": "shared title" if j % 17 == 0 else f"{['Acme', 'Bolt'][j % 2]} {['shoe', 'hat', 'bag'][j % 3]} {j}",
            "category": ["shoe", "hat", "bag"][j % 3],
            "price": float(rng.integers(1, 100)),
            "on_sale": bool(rng.random() < 0.3),
            "tags": [t for t in ("gift", "new", f"sku-{j}") if rng.random() < 0.5],
            "created_ts": 1_700_000_000 + float(rng.integers(0, 1000)),
            "sku": f"S-{j}",
            "vector": rng.standard_normal(4).round(4).tolist(),
        }
        if j % 11 == 0:
            item["hidden"] = True
        if j % 13 == 0:
            item["stock"] = int(rng.integers(0, 6))
        if j % 29 == 5:
            del item["title"]
        if j % 37 == 9:
            item["price"] = "not a price"  # rejected: conflicts with the number type
        out.append((f"i{j}", item))
    out.append(("odd", [1, 2, 3]))  # not a JSON object: rejected
    for j in range(3):  # keys that are not the item's id: rejections are named by the key
        out.append((f"key-{j}", {"item_id": f"own-{j}", "price": "bad" if j == 1 else 1.0, "title": "t"}))
    return out


def _old_path(messages: list[tuple[str, object]], **options: Any) -> CatalogView:
    view = CatalogView(**options)
    for key, item in messages:
        view.on_update(key, item)
    view.sync()
    return view


def _bulk(messages: list[tuple[str, object]], chunk_items: int = 20_000, **options: Any) -> CatalogView:
    view = CatalogView(initial_load=True, **options)
    view.build_chunk_items = chunk_items
    view.on_update("ignored", {"item_id": "ignored"})  # before load_initial: the table holds it
    assert not view.initial_built
    view.load_initial([(k, orjson.dumps(v)) for k, v in messages], orjson.loads)
    assert view.initial_built
    view.sync()
    return view


def _answers(view: CatalogView, ids: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"rejected": dict(view.rejected), "servable": view.servable(ids).tolist(),
                           "get": [view.index.get(i) for i in ids], "n_live": len(view.index),
                           "n_vectors": len(view.vectors), "similar": sorted(view.vectors.similar("i1", 1000)[0])}
    for expr in FILTERS:
        for item_id in ("i7", "i34", "i5"):
            ctx = RequestContext(item=view.item_attributes(item_id), params={"max_price": "60"})
            out[f"{expr} @ {item_id}"] = sorted(view.index.item_ids(view.engine.filter(expr, ctx)))
    return out


@pytest.mark.parametrize("chunk_items", [20_000, 7], ids=["one-chunk", "chunks-of-7"])
def test_bulk_load_answers_as_the_per_item_path_before_and_after_live_changes(chunk_items: int) -> None:
    messages = _catalog(400, seed=3)
    old, new = _old_path(messages), _bulk(messages, chunk_items)
    ids = [k for k, _ in messages] + ["never-seen"]
    before = _answers(old, ids)
    assert before == _answers(new, ids)
    assert before["title == 'shared title' AND price < 50 @ i7"]  # the filters select something
    assert before["title == 'Acme shoe 7' @ i7"] == []  # i7 is "Bolt hat 7"
    assert before["title == context.item.title @ i7"] == ["i7"]
    assert len(before["rejected"]) == 13 and "odd" in before["rejected"] and "key-1" in before["rejected"]
    changes: list[tuple[str, object]] = [
        ("i7", {"item_id": "i7", "title": "shared title", "category": "hat", "price": 10.0}),  # unique -> shared
        ("i17", {"item_id": "i17", "title": "Acme shoe 7", "price": 12.0, "tags": ["sku-3"]}),  # shared -> unique
        ("i34", None),  # deleted
        ("i9", {"item_id": "i9", "title": "back", "price": 5.0}),  # a rejected item comes back valid
        ("i2", {"item_id": "i2", "title": "Bolt hat 2", "price": "bad"}),  # a valid item is rejected
        ("new1", {"item_id": "new1", "title": "Bolt hat 123", "price": 1.0, "stock": 9}),
    ]
    for view in (old, new):
        for key, item in changes:
            view.on_update(key, item)
        view.sync()
    after = _answers(old, ids + ["new1"])
    assert after == _answers(new, ids + ["new1"])
    assert after != before
    shared = "title == 'shared title' AND price < 50 @ i7"
    assert "i7" in after[shared] and "i7" not in before[shared]
    assert after["title == 'Acme shoe 7' @ i7"] == ["i17"] and after["title IS NULL @ i7"] != before["title IS NULL @ i7"]


def _check_column(column: CategoricalColumn | ListColumn, truth: dict[int, Any], pool: list[str]) -> None:
    for value in pool:
        want = sorted(i for i, v in truth.items() if v is not None and (value in v if isinstance(column, ListColumn) else v == value))
        assert list(column.eq(value)) == want, value
    pick = pool[::7]
    want = sorted(i for i, v in truth.items() if v is not None and (set(v) & set(pick) if isinstance(column, ListColumn) else v in pick))
    assert list(column.any_of(pick)) == want
    assert list(column.present) == sorted(i for i, v in truth.items() if v is not None)
    for i, v in truth.items():
        assert column.value_at(i) == v


def test_one_item_values_answer_as_a_dict_of_sets_through_sets_and_moves() -> None:
    rng = np.random.default_rng(11)
    pool = [f"v{k}" for k in range(300)]  # mostly one item per value, some shared, some moving
    for kind in (CategoricalColumn, ListColumn):
        column = kind()
        n = 200
        first = {i: (pool[i] if kind is CategoricalColumn else (pool[i], pool[(i * 7) % 300])) for i in range(n)}
        column.bulk_load(np.arange(n, dtype=np.int64), list(first.values()))
        truth: dict[int, Any] = dict(first)
        _check_column(column, truth, pool)
        for _ in range(2000):
            i = int(rng.integers(0, n + 20))
            r = rng.random()
            value: Any = None if r < 0.15 else pool[int(rng.integers(0, 300))]
            if kind is ListColumn and value is not None:
                value = tuple(dict.fromkeys([value, pool[int(rng.integers(0, 300))]]))
            column.set(i, value)
            truth[i] = value
        _check_column(column, truth, pool)


def test_the_api_catalog_view_is_built_once_caught_up_and_then_follows_changes(broker) -> None:
    topic = f"catalog-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker, [TopicSpec(topic, 2, compacted=True)])
    p = Producer({"bootstrap.servers": broker})
    messages = _catalog(60, seed=5)
    for key, item in messages:
        p.produce(topic, key=key.encode(), value=orjson.dumps(item))
    p.produce(topic, key=b"i3", value=None)  # a tombstone before the start
    assert p.flush(10) == 0
    view = CatalogView(initial_load=True)
    table = TopicTable(broker, topic, orjson.loads, on_update=view.on_update, keep_raw=True,
                       on_caught_up=lambda t: view.load_initial(t.raw_items(), t.decode, t.tombstoned_keys())).start()
    try:
        assert table.wait_caught_up(20)
        assert view.initial_built  # built before wait_caught_up says caught up
        view.sync()
        expected = _old_path([*messages, ("i3", None)])  # the node that read them live
        ids = [k for k, _ in messages]
        assert _answers(view, ids) == _answers(expected, ids)
        # the deleted item stays unservable on a node that starts after the tombstone (README: "never served"),
        # although the table no longer holds it and a model may still know it
        assert view.servable(["i3", "i4", "never-in-catalog"]).tolist() == [False, True, True]
        assert table.tombstoned_keys() == ["i3"]
        p.produce(topic, key=b"i8", value=orjson.dumps({"item_id": "i8", "title": "live", "price": 1.0}))
        assert p.flush(10) == 0
        deadline = time.monotonic() + 10
        while view.index.get("i8") != {"item_id": "i8", "title": "live", "price": 1.0} and time.monotonic() < deadline:
            time.sleep(0.05)
            view.sync()
        assert view.index.get("i8") == {"item_id": "i8", "title": "live", "price": 1.0}
        assert sorted(view.index.item_ids(view.engine.filter("title == 'live'", RequestContext()))) == ["i8"]
    finally:
        table.stop()


def test_the_live_queue_is_bounded_and_sync_forever_applies_it_without_requests() -> None:
    view = CatalogView(max_queue=8, max_wait_s=30.0)
    sizes: list[int] = []

    def publish() -> None:
        for j in range(200):
            view.on_update(f"i{j}", {"item_id": f"i{j}", "title": f"t{j}", "price": float(j)})
            sizes.append(len(view._queue))

    async def run() -> None:
        task = asyncio.create_task(sync_forever(view, interval_s=0.001, max_items=3))
        thread = threading.Thread(target=publish)
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.001)
        deadline = time.monotonic() + 10
        while view._queue and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(run())
    assert max(sizes) <= 8 and len(sizes) == 200
    assert len(view.index) == 200 and view.index.get("i199") == {"item_id": "i199", "title": "t199", "price": 199.0}


def test_a_full_queue_waits_at_most_max_wait_s_when_nothing_syncs() -> None:
    view = CatalogView(max_queue=2, max_wait_s=0.2)
    t0 = time.monotonic()
    for j in range(4):
        view.on_update(f"i{j}", {"item_id": f"i{j}"})
    waited = time.monotonic() - t0
    assert 0.5 <= waited < 2.0  # the 2nd, 3rd and 4th changes each waited 0.2 s, then were queued
    assert view.sync() == 4 and len(view.index) == 4


def test_vector_exact_below_and_n_probe_reach_the_served_index() -> None:
    """``api.vector_exact_below`` and ``api.vector_n_probe`` (passed by ``build_services``) hold before and
    after the bulk build."""
    view = CatalogView(initial_load=True, vector_exact_below=7, vector_n_probe=5)
    assert (view.vectors.exact_below, view.vectors.n_probe) == (7, 5)
    view.load_initial([(f"i{k}", orjson.dumps({"item_id": f"i{k}", "vector": [1.0, float(k)]})) for k in range(3)],
                      orjson.loads)
    view.sync()
    assert (view.vectors.exact_below, view.vectors.n_probe) == (7, 5)
    assert len(view.vectors) == 3


def test_the_first_vector_lists_are_laid_out_before_the_bulk_built_index_is_served() -> None:
    """Issue 14: from ``vector_exact_below`` vectors, ``load_initial`` queues the vector index with its inverted lists
    installed and its row matrix dropped (their layout never meets the model version's load, and no request scans
    every row exactly); the answers are those of the lists a background build installs."""
    rng = np.random.default_rng(5)
    vecs = rng.normal(size=(600, 8)).astype(np.float32)
    messages = [(f"i{k}", {"item_id": f"i{k}", "vector": v.tolist()}) for k, v in enumerate(vecs)]
    view = _bulk(messages, vector_exact_below=200, vector_build_gate=threading.Event())  # a gate never opened
    served = view.vectors
    assert served.approximate and served._build is None and served._buf is None
    reference = VectorIndex(exact_below=1 << 62, background=False)
    for k, v in messages:
        reference.set(k, v["vector"])
    reference.set_exact_below(200)
    for item_id in ("i0", "i17", "i599"):
        assert served.similar(item_id, 50)[0] == reference.similar(item_id, 50)[0]
    assert len(served) == 600


def test_the_api_settings_reach_the_view() -> None:
    """``CatalogView.from_settings`` (what ``build_services`` serves from) takes the ``[api]`` settings."""
    a = ApiSettings(vector_exact_below=11, vector_n_probe=3, vector_dim=4, hidden_attribute="gone")
    view = CatalogView.from_settings(a, initial_load=True)
    assert (view.vectors.exact_below, view.vectors.n_probe, view.vector_dim) == (11, 3, 4)
    assert view._index_options["hidden_attribute"] == "gone" and not view.initial_built


def test_a_request_applies_only_what_was_queued_when_it_started() -> None:
    """A reader that keeps adding while ``sync()`` runs (a bulk re-publish) does not feed one request."""
    view = CatalogView()
    for k in range(5):
        view.on_update(f"a{k}", {"item_id": f"a{k}", "price": 1.0})
    late = iter(range(1000))
    upsert = view.index.upsert

    def upsert_and_queue_another(item: dict[str, Any]) -> None:  # the reader thread, racing the loop
        upsert(item)
        k = next(late)
        view.on_update(f"b{k}", {"item_id": f"b{k}", "price": 1.0})

    view.index.upsert = upsert_and_queue_another  # type: ignore[method-assign]
    assert view.sync() == 5
    assert len(view.index) == 5
    assert len(view._queue) == 5  # the five added meanwhile wait for the next call


@pytest.mark.parametrize("bulk", [False, True])
def test_an_item_is_its_records_key(bulk: bool) -> None:
    """A value naming another id (or the same id written another way) is indexed, served and deleted under
    its record's key, on the bulk path and the live path alike (nodes never disagree)."""
    records = [("k1", {"item_id": "v1", "title": "keydiff", "vector": [1.0, 0.0]}),
               ("777", {"item_id": " 777.0 ", "title": "spaced", "vector": [0.9, 0.1]}),
               ("k3", {"item_id": "k3", "price": 1.0, "vector": [0.7, 0.3]}),
               ("k2", {"item_id": "v2", "price": "bad", "vector": [0.8, 0.2]})]  # rejected: price is a number
    view = _bulk(records) if bulk else _old_path(records)
    assert view.index.lookup(["k1", "v1", "777", " 777.0 "]).tolist()[1::2] == [-1, -1]
    assert view.index.get("k1") == {"item_id": "k1", "title": "keydiff"}
    assert sorted(view.vectors.similar("k3", 10)[0]) == ["777", "k1"]  # the rejected k2's vector is gone
    assert "k2" in view.rejected
    view.on_update("k1", None)
    view.on_update("777", None)
    view.sync()
    assert view.index.get("k1") is None and view.index.get("777") is None
    assert view.vectors.similar("k3", 10)[0] == []


@pytest.mark.parametrize("bulk", [False, True])
def test_vector_dim_refuses_a_wrong_first_vector_not_the_rest(bulk: bool) -> None:
    """With ``api.vector_dim`` set, one wrong vector read first is refused alone (without it, the first
    vector's length would refuse every other)."""
    records: list[tuple[str, object]] = [("bad", {"item_id": "bad", "vector": [1.0, 2.0, 3.0]})]
    records += [(f"i{k}", {"item_id": f"i{k}", "vector": [1.0, float(k), 0.5, 0.25]}) for k in range(20)]
    view = _bulk(records, vector_dim=4) if bulk else _old_path(records, vector_dim=4)
    assert len(view.vectors) == 20 and view.vectors.dim == 4
    default = CatalogView()
    for key, item in records:
        default.on_update(key, item)
    default.sync()
    assert len(default.vectors) == 1  # the documented hazard of vector_dim = None


@pytest.mark.parametrize("bulk", [False, True])
def test_deleted_is_the_catalog_rules_command_on_the_topic_too(bulk: bool) -> None:
    """Issue 13: a record published to the topic directly follows the rule ``fusionrec catalog`` applies:
    ``"deleted": true`` deletes, ``false`` is dropped, ``"true"`` or ``1`` rejects the item (it was indexed
    and served with a ``deleted`` attribute)."""
    records: list[tuple[str, object]] = [
        ("gone", {"item_id": "gone", "deleted": True, "title": "t", "vector": [1.0, 0.0]}),
        ("live", {"item_id": "live", "deleted": False, "title": "t", "vector": [0.9, 0.1]}),
        ("str", {"item_id": "str", "deleted": "true", "title": "t", "vector": [0.8, 0.2]}),
        ("one", {"item_id": "one", "deleted": 1, "title": "t", "vector": [0.7, 0.3]}),
        ("other", {"item_id": "other", "title": "t", "vector": [0.6, 0.4]})]
    view = _bulk(records) if bulk else _old_path(records)
    assert view.index.get("live") == {"item_id": "live", "title": "t"}  # no deleted column
    assert view.index.column("deleted") is None
    assert view.index.get("gone") is None and view.index.get("str") is None and view.index.get("one") is None
    assert view.servable(["live", "other", "str", "one"]).tolist() == [True, True, False, False]
    assert sorted(view.rejected) == ["one", "str"]
    assert view.rejected["str"] == ("attribute 'deleted' must be a JSON bool: use true to delete the item or "
                                    "false to keep it; got 'true' (str)")
    assert sorted(view.vectors.similar("live", 10)[0]) == ["other"]
    view.on_update("live", {"item_id": "live", "deleted": True})  # a later version deletes it, as a tombstone
    view.sync()
    assert view.index.get("live") is None and view.servable(["live"]).tolist() == [False]
    assert view.vectors.similar("other", 10)[0] == []


@pytest.mark.parametrize("bulk", [False, True])
def test_an_item_whose_vector_does_not_fit_is_rejected_as_by_the_cli(bulk: bool) -> None:
    """Issue 14: a nested vector or one of numeric strings was indexed (np.asarray flattened or parsed it) and the
    item served; it is rejected now by the rule ``fusionrec catalog`` applies (``check_vector``), as a wrong
    length is with ``api.vector_dim`` set."""
    records: list[tuple[str, object]] = [
        ("ok", {"item_id": "ok", "title": "t", "vector": [1.0, 0.0]}),
        ("near", {"item_id": "near", "title": "t", "vector": [1, 1]}),
        ("nested", {"item_id": "nested", "title": "t", "vector": [[1.0], [0.5]]}),
        ("strings", {"item_id": "strings", "title": "t", "vector": ["0.9", "0.1"]}),
        ("bools", {"item_id": "bools", "title": "t", "vector": [True, False]}),
        ("long", {"item_id": "long", "title": "t", "vector": [0.9, 0.1, 0.0]}),
        ("none", {"item_id": "none", "title": "t", "vector": None})]
    view = _bulk(records, vector_dim=2) if bulk else _old_path(records, vector_dim=2)
    assert sorted(view.rejected) == ["bools", "long", "nested", "strings"]
    assert view.rejected["nested"] == ("attribute 'vector' must be a flat JSON array of 2 finite numbers "
                                       "(element 0 is an array); got [[1.0], [0.5]] (list)")
    assert view.rejected["strings"].startswith("attribute 'vector' must be a flat JSON array of 2 finite numbers "
                                               "(element 0 is a string)")
    assert view.servable(["ok", "near", "none", "nested", "strings", "bools", "long"]).tolist() == [
        True, True, True, False, False, False, False]
    assert view.vectors.similar("ok", 10)[0] == ["near"]
