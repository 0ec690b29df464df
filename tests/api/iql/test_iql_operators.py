"""Every IQL operator, request context binding, parameters, now() and compile-time rejections."""

from __future__ import annotations

import pytest

from api.iql import CatalogIndex, IQLEngine, IQLError, RequestContext

NOW_S = 1_780_000_000.0
DAY_S = 86_400.0
ITEMS = [
    {
        "item_id": "a",
        "brand": "Acme",
        "price": 10,
        "tags": ["red", "sale"],
        "in_stock": True,
        "created": NOW_S - 1 * DAY_S,
    },
    {
        "item_id": "b",
        "brand": "Bolt",
        "price": 30,
        "tags": ["blue"],
        "in_stock": False,
        "created": NOW_S - 10 * DAY_S,
    },
    {
        "item_id": "c",
        "brand": "Acme",
        "price": 50,
        "tags": ["red"],
        "in_stock": True,
        "created": NOW_S - 30 * DAY_S,
    },
    {"item_id": "d", "brand": "Core", "tags": []},
    {"item_id": "e", "brand": "Acme", "price": 70, "hidden": True},
    {"item_id": "f", "price": 20, "tags": ["blue", "red"], "in_stock": True, "created": NOW_S},
]


@pytest.fixture
def engine() -> IQLEngine:
    return IQLEngine(CatalogIndex.build(ITEMS, declared={"created": "timestamp"}))


def ids(engine: IQLEngine, text: str, ctx: RequestContext | None = None) -> list[str]:
    return sorted(engine.index.item_ids(engine.filter(text, ctx or RequestContext(now_s=NOW_S))))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('brand == "Acme"', ["a", "c"]),  # e is hidden: never selected
        ('brand != "Acme"', ["b", "d"]),  # f has no brand: != needs a value
        ("price < 30", ["a", "f"]),
        ("price <= 30", ["a", "b", "f"]),
        ("price > 30", ["c"]),
        ("price >= 30", ["b", "c"]),
        ("30 > price", ["a", "f"]),  # value on the left is flipped
        ("price == 20", ["f"]),
        ("price != 20", ["a", "b", "c"]),
        ('brand IN ["Bolt", "Core", "Nope"]', ["b", "d"]),
        ('brand NOT IN ("Bolt", "Core")', ["a", "c"]),
        ("price IN [10, 50]", ["a", "c"]),
        ("price BETWEEN 20 AND 50", ["b", "c", "f"]),
        ("price NOT BETWEEN 20 AND 50", ["a"]),
        ('tags CONTAINS "red"', ["a", "c", "f"]),
        ('tags ANY ["sale", "blue"]', ["a", "b", "f"]),
        ('tags ALL ["red", "blue"]', ["f"]),
        ("tags ALL []", ["a", "b", "c", "d", "f"]),
        ("tags ANY []", []),
        ("price IS NULL", ["d"]),
        ("brand IS NOT NULL", ["a", "b", "c", "d"]),
        ("in_stock", ["a", "c", "f"]),
        ("in_stock == false", ["b"]),
        ("NOT in_stock", ["b", "d"]),  # NOT includes items without a value
        ('brand == "Acme" AND price > 20', ["c"]),
        ('brand == "Bolt" OR tags CONTAINS "sale"', ["a", "b"]),
        ('NOT (brand == "Acme" OR price IS NULL)', ["b", "f"]),
        ("created > now() - 7d", ["a", "f"]),
        ("created BETWEEN now() - 2w AND now() - 1h", ["a", "b"]),
        ("created < now() - 240h", ["c"]),
        ('created >= "2026-05-18T00:00:00Z"', ["a", "b", "f"]),
        ("created >= 2026-05-18", ["a", "b", "f"]),
        ("created > 1779000000", ["a", "b", "f"]),
        ("2 * 3 > 5", ["a", "b", "c", "d", "f"]),  # value-only condition: true -> all live items
        ('1 > 2 OR brand == "Core"', ["d"]),
    ],
)
def test_operator(engine: IQLEngine, text: str, expected: list[str]) -> None:
    assert ids(engine, text) == expected


def test_context_item_user_and_cart(engine: IQLEngine) -> None:
    ctx = engine.context(
        item_id="a", cart_item_ids=["b", "c", "zz"], user={"segment": "vip", "max_price": 25}, now_s=NOW_S
    )
    assert ctx.item is not None and ctx.item["brand"] == "Acme" and len(ctx.cart) == 2
    assert ids(engine, "brand == context.item.brand", ctx) == ["a", "c"]
    assert ids(engine, "brand != context.item.brand", ctx) == ["b", "d"]
    assert ids(engine, "price < context.item.price * 2.5", ctx) == ["a", "f"]
    assert ids(engine, "tags ANY context.item.tags", ctx) == ["a", "c", "f"]
    assert ids(engine, "price <= MIN(context.cart.price)", ctx) == ["a", "b", "f"]
    assert ids(engine, "price > MAX(context.cart.price)", ctx) == []
    assert ids(engine, "price < AVG(context.cart.price)", ctx) == ["a", "b", "f"]
    assert ids(engine, "price <= SUM(context.cart.price) - 60", ctx) == ["a", "f"]
    assert ids(engine, "brand == ANY(context.cart.brand)", ctx) == ["a", "b", "c"]
    assert ids(engine, "brand NOT IN context.cart.brand", ctx) == ["d"]
    assert ids(engine, "tags CONTAINS ANY(context.cart.tags)", ctx) == ["a", "b", "c", "f"]
    assert ids(engine, 'context.user.segment == "vip" AND price < context.user.max_price', ctx) == ["a", "f"]
    assert ids(engine, 'context.user.segment != "vip" OR brand == "Core"', ctx) == ["d"]
    assert ids(engine, "context.user.missing IS NULL AND price == 10", ctx) == ["a"]
    assert ids(engine, 'context.item.tags CONTAINS "sale" AND price == 30', ctx) == ["b"]
    assert ids(engine, 'context.item.tags ANY ["x", "red"] AND price == 30', ctx) == ["b"]
    assert ids(engine, "context.item.tags IS NOT NULL AND price == 30", ctx) == ["b"]


def test_missing_context_is_null(engine: IQLEngine) -> None:
    ctx = engine.context(now_s=NOW_S)
    assert ids(engine, "brand == context.item.brand", ctx) == []
    assert ids(engine, "price < MIN(context.cart.price)", ctx) == []
    assert ids(engine, "brand IN ANY(context.cart.brand)", ctx) == []
    assert ids(engine, "brand NOT IN ANY(context.cart.brand)", ctx) == ["a", "b", "c", "d"]
    assert ids(engine, "context.item.brand IS NULL AND price == 30", ctx) == ["b"]


def test_params_are_coerced_to_the_compared_type(engine: IQLEngine) -> None:
    params = {
        "brand": "Acme",
        "max": "40",
        "brands": ["Bolt", "Core"],
        "stock": "true",
        "since": "2026-05-10",
    }
    ctx = RequestContext(params=params, now_s=NOW_S)
    assert ids(engine, "brand == $brand AND price < $max", ctx) == ["a"]
    assert ids(engine, "brand IN $brands", ctx) == ["b", "d"]
    assert ids(engine, 'brand IN ($brand, "Bolt")', ctx) == ["a", "b", "c"]
    assert ids(engine, "in_stock == $stock", ctx) == ["a", "c", "f"]
    assert ids(engine, "created > $since", ctx) == ["a", "b", "f"]
    assert ids(engine, "$max > 30 AND price == 10", ctx) == ["a"]


def test_param_errors_name_the_parameter(engine: IQLEngine) -> None:
    with pytest.raises(
        IQLError, match=r"column 10: expected a value for request parameter \$brand, found none"
    ):
        engine.filter("brand == $brand", RequestContext())
    with pytest.raises(IQLError, match=r"expected a number for \$max, found 'cheap'"):
        engine.filter("price < $max", RequestContext(params={"max": "cheap"}))
    with pytest.raises(IQLError, match=r"expected a single value for \$max"):
        engine.filter("price < $max", RequestContext(params={"max": [1, 2]}))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'brnd == "Acme"',
            "column 1: expected an attribute of the catalogue (did you mean 'brand'?), "
            "found unknown attribute 'brnd'",
        ),
        ('price == "cheap"', "column 10: expected a number, found string 'cheap'"),
        ('brand > "A"', "expected '==' or '!=' (brand is a string), found '>'"),
        ('tags == "red"', "expected CONTAINS, ANY or ALL (tags is a list of strings), found '=='"),
        ('tags IN ["red"]', "expected ANY or ALL (tags is a list of strings), found 'IN'"),
        ('brand CONTAINS "A"', "expected a list attribute before CONTAINS"),
        ("brand BETWEEN 1 AND 2", "expected a number or timestamp attribute before BETWEEN"),
        ("price == brand", "expected a value (comparing two attributes is not supported)"),
        ('created > "yesterday"', "expected an ISO-8601 timestamp, found string 'yesterday'"),
        ("brand == MIN(context.cart.price)", "expected a string, found MIN(context.cart.price) (a number)"),
        ("price < MAX(context.cart.brand)", "expected a number or timestamp attribute inside MAX()"),
        ("price == context.item.nope", "unknown attribute 'nope'"),
        ("price", "expected a condition (price is a number"),
        ("brand == now()", "expected a string, found now() (a timestamp)"),
        ('in_stock == "yes"', "expected a bool, found string 'yes'"),
        ("price < ANY(context.cart.price)", "expected a single value"),
    ],
)
def test_compile_errors_at_save_time(engine: IQLEngine, text: str, message: str) -> None:
    with pytest.raises(IQLError) as info:
        engine.validate_filter(text)
    assert message in str(info.value)


def test_plans_are_cached_per_text(engine: IQLEngine) -> None:
    first = engine.compile_filter('brand == "Acme"')
    assert engine.compile_filter('brand == "Acme"') is first
    assert first.attributes == frozenset({"brand"})
    assert engine.compile_filter("brand == $b AND price < $p").params == frozenset({"b", "p"})


def test_failed_compile_is_retried_after_the_attribute_appears(engine: IQLEngine) -> None:
    with pytest.raises(IQLError):
        engine.validate_filter('color == "red"')
    engine.index.upsert({"item_id": "g", "color": "red"})
    assert ids(engine, 'color == "red"') == ["g"]


def test_filter_candidates_keeps_order_and_unknowns(engine: IQLEngine) -> None:
    index = engine.index
    cand = index.lookup(["c", "zz", "b", "a", "e"])
    mask = engine.filter_candidates('brand == "Acme"', RequestContext(), cand)
    assert mask.tolist() == [True, False, False, True, False]


def test_a_cart_sum_beyond_the_float_range_is_null_and_its_mean_finite(engine: IQLEngine) -> None:
    """Two cart items priced 1e308 summed to inf, so ``price < SUM(context.cart.price)`` selected every priced
    item; the sum is null (selects nothing, as arithmetic beyond the range), the mean stays the finite 1e308."""
    engine.index.upsert({"item_id": "big1", "brand": "Core", "price": 1e308})
    engine.index.upsert({"item_id": "big2", "brand": "Core", "price": 1e308})
    ctx = engine.context(cart_item_ids=["big1", "big2"], now_s=NOW_S)
    assert ids(engine, "price < SUM(context.cart.price)", ctx) == []
    assert ids(engine, "SUM(context.cart.price) IS NULL AND price == 10", ctx) == ["a"]
    assert ids(engine, "price >= AVG(context.cart.price)", ctx) == ["big1", "big2"]
    assert ids(engine, "price < AVG(context.cart.price)", ctx) == ["a", "b", "c", "f"]  # every other priced item


@pytest.mark.parametrize("a", ["1e308", "1e200"])
def test_arithmetic_beyond_the_float_range_is_null(engine: IQLEngine, a: str) -> None:
    """An overflow (``$a * $a``) or ``inf - inf`` is null, as a division by zero is: a NaN bound made
    ``price < NaN`` select every priced item, and an infinite one ``price < inf`` too."""
    ctx = RequestContext(params={"a": a, "d": "0"}, now_s=NOW_S)
    for text in ("price < $a * $a - $a * $a", "price < $a * $a", "price != $a * $a - $a * $a",
                 "price BETWEEN 0 AND $a * $a", "price > 0 - $a * $a", "price < 10 / $d"):
        assert ids(engine, text, ctx) == [], text
    assert ids(engine, "NOT (price >= $a * $a - $a * $a)", ctx) == ["a", "b", "c", "d", "f"]
    assert ids(engine, "$a * $a IS NULL AND price == 10", ctx) == ["a"]
    assert ids(engine, "price < $a - $a + 40", ctx) == ["a", "b", "f"]  # finite results are unchanged
