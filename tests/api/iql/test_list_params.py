"""IQL list parameters (issue 15): one value is a list of one for IN / ANY / ALL (never a substring
or character test), and a parameter that does not fit its use names itself in the error."""

from __future__ import annotations

import pytest

from api.iql import CatalogIndex, IQLEngine, IQLError, RequestContext

ITEMS = [{"item_id": "a", "brand": "Acme", "tags": ["x", "y"], "price": 1},
         {"item_id": "b", "brand": "A", "tags": ["y"], "price": 2},
         {"item_id": "c", "brand": "Bolt", "tags": ["z"], "price": 3}]


@pytest.fixture
def engine() -> IQLEngine:
    return IQLEngine(CatalogIndex.build(ITEMS))


def ids(engine: IQLEngine, text: str, **params: object) -> list[str]:
    return sorted(engine.index.item_ids(engine.filter(text, RequestContext(params=params))))


@pytest.mark.parametrize(("text", "params", "expected"), [
    ("brand IN $bs", {"bs": "Acme"}, ["a"]),  # not the characters of "Acme" (which would hit "A")
    ("brand IN $bs", {"bs": ["Acme", "Bolt"]}, ["a", "c"]),
    ("brand NOT IN $bs", {"bs": "Acme"}, ["b", "c"]),
    ("tags ANY $t", {"t": "z"}, ["c"]),
    ("tags ALL $t", {"t": ["x", "y"]}, ["a"]),
    ("price IN $p", {"p": ["1", "3"]}, ["a", "c"]),
    ("$v IN $bs", {"v": "Ac", "bs": "Acme"}, []),  # value-only IN: membership, not a substring test
])
def test_list_parameters(engine, text, params, expected):
    assert ids(engine, text, **params) == expected


@pytest.mark.parametrize(("text", "params", "param"), [
    ("price < $p", {"p": "cheap"}, "p"),
    ("price < $p", {"p": ["1", "2"]}, "p"),
    ("price IN $p", {"p": ["1", "x"]}, "p"),
    ("brand == $b", {}, "b"),
    ("price < $p", {"p": "nan"}, "p"),  # was an empty list (filter_too_selective), not a 400
    ("price < $p", {"p": "inf"}, "p"),
    ("price IN $p", {"p": ["1", "-inf"]}, "p"),
    ("price < $p", {"p": "\u0663"}, "p"),  # ARABIC-INDIC DIGIT THREE: float() reads 3.0; a number is ASCII decimal
    ("price < $p", {"p": "1_000"}, "p"),
    ("price < $p", {"p": "infinity"}, "p"),
    # checked whatever the data selects: the left side selects nothing, so AND never reached $b (trial 13, D16)
    ("brand IN $bs AND brand == $b", {"bs": "Nope"}, "b"),
    ("brand IN $bs AND price < $p", {"bs": "Nope", "p": ["1", "2"]}, "p"),  # (== takes a list, as IN)
    ("price > 100 AND price < $p", {"p": "cheap"}, "p"),
])
def test_parameter_errors_name_the_parameter(engine, text, params, param):
    with pytest.raises(IQLError) as info:
        ids(engine, text, **params)
    assert info.value.param == param and info.value.to_dict()["param"] == param


@pytest.mark.parametrize(("user", "param"), [
    ({"budget": "abc"}, "user.budget"),  # &user.budget=abc: was param None (the API's 400 named "filter")
    ({"budget": ["1", "2"]}, "user.budget"),  # &user.budget=1&user.budget=2: one value is compared
    ({"budget": "1e999"}, "user.budget"),  # was inf (every priced item) while &user.budget=inf was a 400
    ({"budget": "nan"}, "user.budget"),  # was null (an empty list), where &p=nan is a 400
])
def test_context_user_errors_name_the_request_parameter(engine, user, param):
    ctx = RequestContext(user=user, params={f"user.{k}": v for k, v in user.items()})
    with pytest.raises(IQLError) as info:
        engine.filter("price < context.user.budget", ctx)
    assert info.value.param == param and info.value.to_dict()["param"] == param
    assert "context.user.budget" in str(info.value)


def test_context_user_not_from_a_request_parameter_names_none(engine):
    with pytest.raises(IQLError) as info:  # set by the caller, not a request's user.<a>: no parameter to name
        engine.filter("price < context.user.budget", RequestContext(user={"budget": "abc"}))
    assert info.value.param is None
