"""Parser: the syntax tree of each construct, and syntax errors with line, column and expectation."""

from __future__ import annotations

import pytest

from api.iql import ast
from api.iql.errors import IQLError
from api.iql.parser import IQLParser


@pytest.fixture(scope="module")
def parser() -> IQLParser:
    return IQLParser()


def test_comparison_and_precedence(parser: IQLParser) -> None:
    tree = parser.parse_filter('a == 1 OR b != "x" AND NOT c < 2')
    assert isinstance(tree, ast.Or)
    left, right = tree.items
    assert left == ast.Compare(
        "==", ast.Attr("a", ast.Pos(1, 1)), ast.Literal(1.0, "number", ast.Pos(1, 6)), ast.Pos(1, 1)
    )
    assert isinstance(right, ast.And)
    assert isinstance(right.items[1], ast.Not)
    assert right.items[1].item.op == "<"


def test_parentheses_override_precedence(parser: IQLParser) -> None:
    tree = parser.parse_filter("(a == 1 OR b == 2) AND c == 3")
    assert isinstance(tree, ast.And) and isinstance(tree.items[0], ast.Or)


@pytest.mark.parametrize(
    ("text", "node_type"),
    [
        ("x IN [1, 2]", ast.In),
        ("x NOT IN (1, 2)", ast.In),
        ("x BETWEEN 1 AND 2", ast.Between),
        ("x NOT BETWEEN 1 AND 2", ast.Between),
        ('t CONTAINS "a"', ast.ListOp),
        ('t ANY ["a"]', ast.ListOp),
        ('t ALL ("a", "b")', ast.ListOp),
        ("x IS NULL", ast.IsNull),
        ("x IS NOT NULL", ast.IsNull),
        ("flag", ast.Truthy),
    ],
)
def test_each_predicate_form(parser: IQLParser, text: str, node_type: type) -> None:
    assert isinstance(parser.parse_filter(text), node_type)


def test_keywords_are_case_insensitive(parser: IQLParser) -> None:
    assert parser.parse_filter("a in [1] and not b is null or c between 1 and 2") == parser.parse_filter(
        "a IN [1] AND NOT b IS NULL OR c BETWEEN 1 AND 2"
    )


def test_literals(parser: IQLParser) -> None:
    tree = parser.parse_filter('a IN ["q\\"", -2.5e1, true, FALSE, 2024-01-01T00:00:00Z, 90m, \'s\']')
    assert isinstance(tree, ast.In) and isinstance(tree.values, ast.ListValue)
    values = [(v.value, v.kind) for v in tree.values.items]  # type: ignore[union-attr]
    assert values == [
        ('q"', "string"),
        (-25.0, "number"),
        (True, "bool"),
        (False, "bool"),
        (1704067200.0, "timestamp"),
        (5400.0, "duration"),
        ("s", "string"),
    ]


def test_durations_in_every_unit(parser: IQLParser) -> None:
    seconds = [
        parser.parse_filter(f"t > now() - {d}").right.right.value for d in ("5s", "5m", "5h", "5d", "5w")
    ]
    assert seconds == [5.0, 300.0, 18000.0, 432000.0, 3024000.0]


def test_context_params_and_aggregates(parser: IQLParser) -> None:
    tree = parser.parse_filter(
        "brand == context.item.brand AND p <= MIN(context.cart.price) * 1.2 "
        "AND s == $seg AND b == ANY(context.cart.brand) AND u == context.user.segment"
    )
    assert isinstance(tree, ast.And)
    assert tree.items[0].right == ast.ContextRef("item", "brand", ast.Pos(1, 10))
    assert isinstance(tree.items[1].right, ast.Arith)
    assert tree.items[1].right.left.func == "min"
    assert tree.items[2].right == ast.Param("seg", ast.Pos(1, 77))
    assert tree.items[3].right.func == "any"
    assert tree.items[4].right.scope == "user"


def test_quoted_attribute_names_allow_keywords_and_spaces(parser: IQLParser) -> None:
    tree = parser.parse_filter('`base colour` == "Navy" AND `min` > 1')
    assert [i.left.name for i in tree.items] == ["base colour", "min"]


def test_boosters(parser: IQLParser) -> None:
    tree = parser.parse_boosters('BOOST 1.5 IF brand == "Acme"\nBOOST 0.5 IF price > 100')
    assert [c.weight for c in tree.clauses] == [1.5, 0.5]
    assert tree.clauses[1].pos == ast.Pos(2, 1)


def test_error_names_line_column_and_expected_value(parser: IQLParser) -> None:
    with pytest.raises(IQLError) as info:
        parser.parse_filter("price < 10 AND brand == AND x")
    err = info.value
    assert (err.line, err.column, err.expected, err.found) == (1, 25, "a value", "'AND'")
    assert str(err) == "IQL error at line 1, column 25: expected a value after '==', found 'AND'"


def test_error_on_a_later_line(parser: IQLParser) -> None:
    with pytest.raises(IQLError, match=r"line 3, column 7: expected a value after '<', found 'OR'") as info:
        parser.parse_filter('brand == "Acme"\nAND\n  x < OR y')
    assert info.value.to_dict()["line"] == 3


def test_error_at_end_of_input(parser: IQLParser) -> None:
    with pytest.raises(IQLError) as info:
        parser.parse_filter('brand == "Acme" AND')
    assert (info.value.line, info.value.column, info.value.found) == (1, 20, "end of input")
    assert info.value.expected == "a condition"


def test_error_unclosed_parenthesis(parser: IQLParser) -> None:
    with pytest.raises(IQLError, match=r"column 8: expected '\)' after '1', found end of input"):
        parser.parse_filter("(a == 1")


def test_error_unexpected_character_lists_acceptable_tokens(parser: IQLParser) -> None:
    with pytest.raises(IQLError) as info:
        parser.parse_filter("a == 1 ? b")
    assert info.value.column == 8 and info.value.found == "'?'"
    assert "'AND'" in info.value.expected and "'OR'" in info.value.expected


def test_error_unterminated_string(parser: IQLParser) -> None:
    with pytest.raises(
        IQLError, match="column 6: expected a closing quote after '==', found an unterminated"
    ):
        parser.parse_filter('a == "abc')


def test_error_between_needs_and(parser: IQLParser) -> None:
    with pytest.raises(IQLError, match=r"column 13: expected 'AND' after '1', found 'OR'"):
        parser.parse_filter("a BETWEEN 1 OR 2")


def test_error_bad_context_scope(parser: IQLParser) -> None:
    with pytest.raises(IQLError, match="expected one of 'item', 'user', 'cart' after '.', found 'shop'"):
        parser.parse_filter("a == context.shop.x")


def test_error_aggregate_outside_cart(parser: IQLParser) -> None:
    with pytest.raises(IQLError, match="expected 'cart'"):
        parser.parse_filter("a < MIN(context.user.x)")


def test_error_invalid_timestamp(parser: IQLParser) -> None:
    with pytest.raises(IQLError, match="column 5: expected an ISO-8601 timestamp, found '2024-13-01'"):
        parser.parse_filter("t > 2024-13-01")


def test_error_empty_query(parser: IQLParser) -> None:
    with pytest.raises(IQLError, match="line 1, column 4: expected a condition, found end of input"):
        parser.parse_filter("   ")


def test_error_negative_boost(parser: IQLParser) -> None:
    with pytest.raises(IQLError, match=r"expected a weight in \[0, 1e\+06\]"):
        parser.parse_boosters("BOOST -1 IF a")


@pytest.mark.parametrize("text", ["BOOST 1e400 IF a", "BOOST 2e6 IF a", "price < 1e400", "created > now() - " + "9" * 400 + "d"])
def test_error_non_finite_or_huge_numbers(parser: IQLParser, text: str) -> None:
    """``BOOST 1e400`` was saved and made every boosted item's score null."""
    with pytest.raises(IQLError, match="expected a (weight in|finite)"):
        if text.startswith("BOOST"):
            parser.parse_boosters(text)
        else:
            parser.parse_filter(text)
