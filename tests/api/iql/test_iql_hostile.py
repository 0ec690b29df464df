"""Hostile IQL (issue 13): malformed escapes, NUL bytes and deep nesting are IQLErrors (HTTP 400), never a 500."""

from __future__ import annotations

import pytest

from api.iql import IQLError, IQLParser
from api.iql.parser import MAX_DEPTH

P = IQLParser()


@pytest.mark.parametrize("text", [r'brand == "\x4"', r'brand == "\N{NO SUCH NAME}"', r'brand == "\u12"',
                                  r"brand == '\U0011ffff'", r'brand == "\N{"', 'brand == "a\x00b"'])
def test_bad_strings_are_iql_errors(text):
    with pytest.raises(IQLError) as e:
        P.parse_filter(text)
    assert e.value.line == 1 and e.value.column == 10
    assert "string" in e.value.expected


def test_valid_escapes_still_parse():
    lit = P.parse_filter(r'brand == "a\tb\x41\u00e9\N{BULLET}\0\\"').right  # type: ignore[attr-defined]
    assert lit.value == "a\tbAé•\x00\\"


@pytest.mark.parametrize("text", [
    "NOT " * 300 + "on_sale",
    "price < " + " + ".join(["1"] * 1500),
    "price < " + " * ".join(["2"] * 1500),
    "BOOST 2 IF " + "NOT " * 500 + "on_sale",
])
def test_deep_nesting_is_an_iql_error(text):
    parse = P.parse_boosters if text.startswith("BOOST") else P.parse_filter
    with pytest.raises(IQLError) as e:
        parse(text)
    assert f"at most {MAX_DEPTH} levels" in str(e.value)


def test_nesting_within_the_limit_parses():
    P.parse_filter("NOT " * 20 + "on_sale")
    P.parse_filter("price < " + " + ".join(["1"] * 40))
    P.parse_filter("(" * 300 + "on_sale" + ")" * 300)  # redundant parentheses add no level
