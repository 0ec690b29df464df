"""Property: random IQL over a random, randomly updated catalogue agrees with a plain Python evaluator."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.iql import CatalogIndex, IQLEngine
from api.iql.parser import IQLParser

PARSER = IQLParser()  # stateless once built; shared to keep examples fast
NOW_S = 1_000_000.0
HOUR_S = 3600.0
STRINGS = ["x", "y", "z"]
ELEMENTS = ["p", "q", "r"]
Item = dict[str, Any]


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


ATTRIBUTES = {
    "c": _maybe(st.sampled_from(STRINGS)),
    "n": _maybe(st.integers(0, 9)),
    "b": _maybe(st.booleans()),
    "l": _maybe(st.lists(st.sampled_from(ELEMENTS), max_size=3, unique=True)),
    "t": _maybe(st.integers(-48, 48).map(lambda h: NOW_S + h * HOUR_S)),
    "hidden": st.sampled_from([None, None, None, False, True]),
}
items_st = st.lists(st.fixed_dictionaries(ATTRIBUTES), min_size=1, max_size=30)
ops_st = st.lists(
    st.tuples(
        st.sampled_from(["upsert", "patch", "delete"]),
        st.integers(0, 34),
        st.fixed_dictionaries({}, optional=ATTRIBUTES),
    ),
    max_size=25,
)

# ---- expressions: (text, reference predicate(item, env) over plain dicts) ---------------------

NUM_OPS = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
Expr = tuple[str, Any]
PARAM_VALUE = 4.0


def _has(item: Item, name: str) -> bool:
    return item.get(name) is not None


def _lit(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


@st.composite
def leaf(draw: st.DrawFn) -> Expr:
    kind = draw(
        st.sampled_from(
            ["str", "num", "bool", "in", "between", "list", "null", "param", "time", "ctx", "cart"]
        )
    )
    if kind == "str":
        op, v = draw(st.sampled_from(["==", "!="])), draw(st.sampled_from(STRINGS))
        return f"c {op} {_lit(v)}", lambda i, e: _has(i, "c") and NUM_OPS[op](i["c"], v)
    if kind == "num":
        op, v = draw(st.sampled_from(list(NUM_OPS))), draw(st.integers(-1, 10))
        text = f"n {op} {v}" if draw(st.booleans()) else f"{v} {FLIP[op]} n"
        return text, lambda i, e: _has(i, "n") and NUM_OPS[op](i["n"], v)
    if kind == "bool":
        v = draw(st.booleans())
        if draw(st.booleans()):
            return "b", lambda i, e: i.get("b") is True
        return f"b == {_lit(v)}", lambda i, e: _has(i, "b") and i["b"] == v
    if kind == "in":
        negated = draw(st.booleans())
        attr, pool = draw(st.sampled_from([("c", STRINGS), ("n", list(range(10)))]))
        values = draw(st.lists(st.sampled_from(pool), max_size=3))
        text = f"{attr} {'NOT IN' if negated else 'IN'} [{', '.join(_lit(v) for v in values)}]"
        return text, lambda i, e: _has(i, attr) and ((i[attr] in values) != negated)
    if kind == "between":
        negated = draw(st.booleans())
        lo, hi = sorted(draw(st.tuples(st.integers(-1, 10), st.integers(-1, 10))))
        text = f"n {'NOT BETWEEN' if negated else 'BETWEEN'} {lo} AND {hi}"
        return text, lambda i, e: _has(i, "n") and ((lo <= i["n"] <= hi) != negated)
    if kind == "list":
        op = draw(st.sampled_from(["CONTAINS", "ANY", "ALL"]))
        if op == "CONTAINS":
            v = draw(st.sampled_from(ELEMENTS))
            return f"l CONTAINS {_lit(v)}", lambda i, e: _has(i, "l") and v in i["l"]
        values = draw(st.lists(st.sampled_from(ELEMENTS), max_size=3))
        test = any if op == "ANY" else all
        return (
            f"l {op} ({', '.join(_lit(v) for v in values)})" if values else f"l {op} []",
            lambda i, e: _has(i, "l") and test(v in i["l"] for v in values),
        )
    if kind == "null":
        attr, negated = draw(st.sampled_from(["c", "n", "b", "l", "t"])), draw(st.booleans())
        return f"{attr} IS {'NOT ' if negated else ''}NULL", lambda i, e: _has(i, attr) == negated
    if kind == "param":
        op = draw(st.sampled_from(list(NUM_OPS)))
        return f"n {op} $p", lambda i, e: _has(i, "n") and NUM_OPS[op](i["n"], PARAM_VALUE)
    if kind == "time":
        hours = draw(st.integers(0, 50))
        return f"t >= now() - {hours}h", lambda i, e: _has(i, "t") and i["t"] >= NOW_S - hours * HOUR_S
    if kind == "ctx":
        return "c == context.item.c", lambda i, e: _has(i, "c") and i["c"] == e["current"].get("c")
    return (
        "n <= MAX(context.cart.n)",
        lambda i, e: _has(i, "n") and e["cart_max"] is not None and i["n"] <= e["cart_max"],
    )


def combine(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    pair = st.tuples(children, children)
    return st.one_of(
        pair.map(
            lambda p: (f"({p[0][0]}) AND ({p[1][0]})", lambda i, e, a=p[0][1], b=p[1][1]: a(i, e) and b(i, e))
        ),
        pair.map(
            lambda p: (f"({p[0][0]}) OR ({p[1][0]})", lambda i, e, a=p[0][1], b=p[1][1]: a(i, e) or b(i, e))
        ),
        children.map(lambda c: (f"NOT ({c[0]})", lambda i, e, a=c[1]: not a(i, e))),
    )


expr_st = st.recursive(leaf(), combine, max_leaves=6)


def _apply(model: dict[str, Item], op: str, key: str, attrs: Item) -> None:
    if op == "delete":
        model.pop(key, None)
    elif op == "patch" and key in model:
        model[key] = {k: v for k, v in {**model[key], **attrs}.items() if v is not None}
    else:
        model[key] = {k: v for k, v in attrs.items() if v is not None}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=items_st,
    ops=ops_st,
    expr=expr_st,
    current=st.integers(0, 34),
    cart=st.lists(st.integers(0, 34), max_size=3),
    bucket=st.sampled_from([2, 3, None]),
    max_delta=st.sampled_from([1, 4, None]),
)
def test_bitmaps_agree_with_python(
    items: list[Item],
    ops: list,
    expr: Expr,
    current: int,
    cart: list[int],
    bucket: int | None,
    max_delta: int | None,
) -> None:
    declared = {
        "c": "string",
        "n": "number",
        "b": "bool",
        "l": "list of strings",
        "t": "timestamp",
        "hidden": "bool",
    }
    rows = [{"item_id": f"i{k}", **item} for k, item in enumerate(items)]
    index = CatalogIndex.build(rows, declared=declared, bucket=bucket, max_delta=max_delta)
    model = {row["item_id"]: {k: v for k, v in row.items() if v is not None} for row in rows}
    for op, k, attrs in ops:
        key = f"i{k}"
        if op == "delete":
            index.delete(key)
        else:
            index.upsert({"item_id": key, **attrs}, partial=op == "patch")
        _apply(model, op, key, {"item_id": key, **attrs})

    engine = IQLEngine(index, parser=PARSER)
    ctx = engine.context(
        item_id=f"i{current}",
        cart_item_ids=[f"i{k}" for k in cart],
        params={"p": str(PARAM_VALUE)},
        now_s=NOW_S,
    )
    cart_values = [model[f"i{k}"]["n"] for k in cart if f"i{k}" in model and "n" in model[f"i{k}"]]
    env = {"current": model.get(f"i{current}", {}), "cart_max": max(cart_values) if cart_values else None}

    text, predicate = expr
    got = sorted(index.item_ids(engine.filter(text, ctx)))
    want = sorted(
        key for key, item in model.items() if item.get("hidden") is not True and predicate(item, env)
    )
    assert got == want, text
