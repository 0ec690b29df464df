"""Boosters over HTTP on lists whose scores are negative (a visual arm's cosines): ``BOOST w IF c`` with w > 1
raises the items it selects and w < 1 lowers them, whatever the sign of their scores (``api/serving.py``
``_boosted``). Real broker, catalog with vectors, API over HTTP."""

from __future__ import annotations

import math
import time

import httpx
import pytest

from simulators.producer import EventProducer
from tests.harness import ApiServer, make_settings

pytestmark = pytest.mark.integration

# every item points away from the query item: cosines -1/sqrt(1 + y^2), all negative, higher for a larger y
ITEMS = [{"item_id": "q", "vector": [1.0, 0.0], "on_sale": False, "name": "q"}] + [
    {"item_id": f"i{j:02d}", "vector": [-1.0, float(j)], "on_sale": j in (1, 2, 3), "name": f"i{j:02d}"} for j in range(12)]
BY_COSINE = [f"i{j:02d}" for j in range(11, -1, -1)]  # the visual arm's order, best first
ON_SALE = ["i03", "i02", "i01"]  # the three with the lowest cosines
P = {"item_id": "p", "vector": [-1.0, 0.0], "on_sale": False, "name": "p"}  # positive cosines with every i


def _client_once_loaded(url: str, n_items: int) -> httpx.Client:
    """A client of the API at ``url``, once its catalog holds ``n_items`` items (30 s at most).

    Its timeout is long: on a fresh clone the first visual request compiles the scan's numba kernels (cached on
    disk after), and on a busy 2-core box that took over 10 s (a ReadTimeout in a full local run)."""
    c = httpx.Client(base_url=url, timeout=120)
    deadline = time.monotonic() + 30
    while c.get("/healthz").json().get("catalog_items", 0) < n_items:
        assert time.monotonic() < deadline, "catalog not loaded"
        time.sleep(0.1)
    return c


def test_boosters_raise_items_with_negative_scores(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=1)
    with EventProducer.from_settings(s.kafka) as p:
        p.send_catalog(ITEMS)
    with ApiServer(s) as api:
        c = _client_once_loaded(api.url, len(ITEMS))

        def served(boosters: str, item: str = "q", explain: bool = False) -> list[dict]:
            r = c.put("/v1/campaigns/look", json={"scenario": "visual", "n": 12, "boosters": boosters})
            assert r.status_code in (200, 201), r.text
            body = c.get("/v1/recommendations", params={"campaign": "look", "item_id": item,
                                                        "explain": str(explain).lower()}).json()
            assert body["from_arm"] == 12, body
            return body["items"]

        plain = served("")
        assert [i["item_id"] for i in plain] == BY_COSINE and all(i["score"] < 0 for i in plain)
        cosine = {i["item_id"]: i["score"] for i in plain}
        # raised: the on-sale items first (was last: -0.3 * 10 is -3), in their own order, their scores divided
        got = served("BOOST 10 IF on_sale")
        assert [i["item_id"] for i in got] == ON_SALE + [i for i in BY_COSINE if i not in ON_SALE], got
        assert all(math.isclose(i["score"], cosine[i["item_id"]] / 10) for i in got[:3]), got
        # lowered: a weight below 1 moves them down, 0 to the bottom (a finite score, never null)
        got = served("BOOST 0.5 IF name == \"i11\"")
        order = [i["item_id"] for i in got]
        assert order[0] == "i10" and order.index("i11") == 5, got  # -0.0905 / 0.5 is -0.181: below i06's -0.164
        assert math.isclose(got[5]["score"], cosine["i11"] * 2), got
        got = served("BOOST 0 IF on_sale")
        assert [i["item_id"] for i in got][-3:] == ON_SALE, got
        assert all(isinstance(i["score"], float) and math.isfinite(i["score"]) for i in got), got
        # explain names every clause an item matched, a BOOST 1 too (it was left out: its weight changed nothing)
        served("BOOST 1 IF on_sale BOOST 2 IF name == \"i01\"")
        body = c.get("/v1/recommendations", params={"campaign": "look", "item_id": "q", "explain": "true"}).json()
        why = {i["item_id"]: e for i, e in zip(body["items"], body["explanations"], strict=True)}
        assert why["i01"]["boosters"] == ["BOOST 1 IF on_sale", 'BOOST 2 IF name == "i01"'] and why["i01"]["boost"] == 2.0
        assert why["i02"]["boosters"] == ["BOOST 1 IF on_sale"] and why["i02"]["boost"] == 1.0, why["i02"]
        assert why["i11"]["boosters"] == [] and why["i11"]["boost"] == 1.0, why["i11"]


def test_many_boosters_give_finite_scores(broker, tmp_path):
    """60 clauses of 1e6 made the product of weights inf: the boosted items' scores were null in JSON, and a later
    ``BOOST 0`` made an item's score NaN (null, ranked last); the product is capped (``MAX_MULTIPLIER``)."""
    s = make_settings(broker, tmp_path, partitions=1)
    with EventProducer.from_settings(s.kafka) as p:
        p.send_catalog(ITEMS[1:] + [P])
    with ApiServer(s) as api:
        c = _client_once_loaded(api.url, len(ITEMS))
        boosters = "BOOST 1e6 IF on_sale " * 60 + 'BOOST 0 IF name == "i01"'
        assert c.put("/v1/campaigns/many", json={"scenario": "visual", "n": 12, "boosters": boosters}).status_code == 201
        body = c.get("/v1/recommendations", params={"campaign": "many", "item_id": "p", "explain": "true"}).json()
        items = body["items"]
        assert [i["item_id"] for i in items][:2] == ["i02", "i03"], body  # cosines 1/sqrt(5) > 1/sqrt(10)
        assert items[-1]["item_id"] == "i01" and items[-1]["score"] == 0.0, body  # BOOST 0: the bottom
        assert all(isinstance(i["score"], float) and math.isfinite(i["score"]) for i in items), body
        assert all(isinstance(e["boost"], float) for e in body["explanations"]), body
