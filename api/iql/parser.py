"""IQL text -> syntax tree (``api.iql.ast``), with errors that name line, column and expectation."""

from __future__ import annotations

import ast as pyast
import math
from importlib.resources import files
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedInput, UnexpectedToken, VisitError

from api.iql import ast
from api.iql.errors import IQLError
from api.iql.schema import to_epoch_s

__all__ = ["IQLParser"]

MAX_BOOST = 1e6
"""Largest ``BOOST`` weight: the sum of every clause's weight stays finite in float64."""
MAX_DEPTH = 64
"""Deepest nesting of conditions and arithmetic a query may have (deeper: an ``IQLError``, not a RecursionError)."""
_DURATION_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_VALUE_START = {"STRING", "NUMBER", "NAME", "PARAM"}
_CONDITION_START = {"_NOT", "LPAR"}
_DISPLAY = {
    "COMPOP": "a comparison ('==', '!=', '<', '<=', '>', '>=')",
    "ADDOP": "'+' or '-'",
    "MULOP": "'*' or '/'",
    "SCOPE": "one of 'item', 'user', 'cart'",
    "AGG": "MIN, MAX, AVG or SUM",
    "NUMBER": "a number",
    "STRING": "a string",
    "NAME": "an attribute",
    "$END": "end of input",
}


def _pos(node: Token | Any) -> ast.Pos:
    return ast.Pos(node.line, node.column)


@v_args(meta=True)
class _ToAst(Transformer):
    """Lark tree -> frozen dataclasses; positions from tokens or rule metadata."""

    def filter(self, meta: Any, c: list[Any]) -> ast.Expr:
        return c[0]

    def boosters(self, meta: Any, c: list[ast.BoosterClause]) -> ast.Boosters:
        return ast.Boosters(tuple(c))

    def booster(self, meta: Any, c: list[Any]) -> ast.BoosterClause:
        weight = float(c[0])
        if not 0 <= weight <= MAX_BOOST:  # an infinite weight (1e400) or a sum of huge ones made scores null
            raise IQLError(c[0].line, c[0].column, f"a weight in [0, {MAX_BOOST:g}]", f"'{c[0]}'", after="'BOOST'")
        return ast.BoosterClause(weight, c[1], _pos(meta))

    def or_expr(self, meta: Any, c: list[ast.Expr]) -> ast.Or:
        return ast.Or(tuple(c), _pos(meta))

    def and_expr(self, meta: Any, c: list[ast.Expr]) -> ast.And:
        return ast.And(tuple(c), _pos(meta))

    def not_(self, meta: Any, c: list[ast.Expr]) -> ast.Not:
        return ast.Not(c[0], _pos(meta))

    def compare(self, meta: Any, c: list[Any]) -> ast.Compare:
        return ast.Compare(str(c[1]), c[0], c[2], _pos(meta))  # type: ignore[arg-type]

    def in_(self, meta: Any, c: list[Any]) -> ast.In:
        return ast.In(c[0], c[1], False, _pos(meta))

    def not_in(self, meta: Any, c: list[Any]) -> ast.In:
        return ast.In(c[0], c[1], True, _pos(meta))

    def between(self, meta: Any, c: list[Any]) -> ast.Between:
        return ast.Between(c[0], c[1], c[2], False, _pos(meta))

    def not_between(self, meta: Any, c: list[Any]) -> ast.Between:
        return ast.Between(c[0], c[1], c[2], True, _pos(meta))

    def contains(self, meta: Any, c: list[Any]) -> ast.ListOp:
        return ast.ListOp("contains", c[0], c[1], _pos(meta))

    def any_of(self, meta: Any, c: list[Any]) -> ast.ListOp:
        return ast.ListOp("any", c[0], c[2], _pos(meta))

    def all_of(self, meta: Any, c: list[Any]) -> ast.ListOp:
        return ast.ListOp("all", c[0], c[1], _pos(meta))

    def is_null(self, meta: Any, c: list[Any]) -> ast.IsNull:
        return ast.IsNull(c[0], False, _pos(meta))

    def is_not_null(self, meta: Any, c: list[Any]) -> ast.IsNull:
        return ast.IsNull(c[0], True, _pos(meta))

    def truthy(self, meta: Any, c: list[Any]) -> ast.Truthy:
        return ast.Truthy(c[0], _pos(meta))

    def list_(self, meta: Any, c: list[Any]) -> ast.ListValue:
        items = tuple(x for x in c if x is not None)
        return ast.ListValue(items, _pos(meta) if not meta.empty else ast.Pos(0, 0))

    def arith(self, meta: Any, c: list[Any]) -> ast.Arith:
        return ast.Arith(str(c[1]), c[0], c[2], _pos(meta))  # type: ignore[arg-type]

    def string(self, meta: Any, c: list[Token]) -> ast.Literal:
        text = str(c[0])
        if "\x00" in text:
            raise IQLError(c[0].line, c[0].column, "a string without NUL characters (write \\0)", "a NUL character")
        try:
            value = pyast.literal_eval(text)
        except (SyntaxError, ValueError) as exc:  # \x1, \N{nope}, \u12 ...
            raise IQLError(c[0].line, c[0].column, "a string with valid escapes (\\\\, \\n, \\t, \\\", \\xNN, "
                           "\\uNNNN, \\N{NAME})", f"string {text[:40]!r}: {getattr(exc, 'msg', exc)}") from None
        return ast.Literal(value, "string", _pos(c[0]))

    def number(self, meta: Any, c: list[Token]) -> ast.Literal:
        value = float(c[0])
        if not math.isfinite(value):
            raise IQLError(c[0].line, c[0].column, "a finite number", f"'{c[0]}'")
        return ast.Literal(value, "number", _pos(c[0]))

    def duration(self, meta: Any, c: list[Token]) -> ast.Literal:
        text = str(c[0])
        value = float(text[:-1]) * _DURATION_S[text[-1]]
        if not math.isfinite(value):
            raise IQLError(c[0].line, c[0].column, "a finite duration", f"'{c[0]}'")
        return ast.Literal(value, "duration", _pos(c[0]))

    def timestamp(self, meta: Any, c: list[Token]) -> ast.Literal:
        try:
            value = to_epoch_s(str(c[0]))
        except ValueError as exc:
            raise IQLError(c[0].line, c[0].column, "an ISO-8601 timestamp", f"'{c[0]}'") from exc
        return ast.Literal(value, "timestamp", _pos(c[0]))

    def true(self, meta: Any, c: list[Any]) -> ast.Literal:
        return ast.Literal(True, "bool", _pos(meta))

    def false(self, meta: Any, c: list[Any]) -> ast.Literal:
        return ast.Literal(False, "bool", _pos(meta))

    def attr(self, meta: Any, c: list[Token]) -> ast.Attr:
        name = str(c[0])
        return ast.Attr(name[1:-1] if name.startswith("`") else name, _pos(c[0]))

    def param(self, meta: Any, c: list[Token]) -> ast.Param:
        return ast.Param(str(c[0])[1:], _pos(c[0]))

    def context(self, meta: Any, c: list[Token]) -> ast.ContextRef:
        return ast.ContextRef(str(c[0]), str(c[1]), _pos(meta))  # type: ignore[arg-type]

    def aggregate(self, meta: Any, c: list[Token]) -> ast.Aggregate:
        ref = ast.ContextRef(str(c[1]), str(c[2]), _pos(c[1]))  # type: ignore[arg-type]
        if ref.scope != "cart":
            raise IQLError(c[1].line, c[1].column, "'cart'", f"'{c[1]}'", after=f"'{c[0]}(context.'")
        return ast.Aggregate(str(c[0]).lower(), ref, _pos(c[0]))  # type: ignore[arg-type]

    def now(self, meta: Any, c: list[Any]) -> ast.Now:
        return ast.Now(_pos(meta))


class IQLParser:
    """LALR(1) parser of IQL filters and boosters; build one per app and reuse it.

    Examples
    --------
    >>> IQLParser().parse_filter('brand == "Acme" AND price < 100')  # doctest: +ELLIPSIS
    And(items=(Compare(op='==', ...
    """

    def __init__(self) -> None:
        grammar = files("api.iql").joinpath("grammar.lark").read_text(encoding="utf-8")
        self._lark = Lark(grammar, parser="lalr", start=["filter", "boosters"], propagate_positions=True)
        self._to_ast = _ToAst()

    def parse_filter(self, text: str) -> ast.Expr:
        """Parse a filter condition.

        Raises
        ------
        IQLError
            On a syntax error, with line, column, the expected token and what was found.
        """
        return self._parse(text, "filter")  # type: ignore[no-any-return]

    def parse_boosters(self, text: str) -> ast.Boosters:
        """Parse ``BOOST <weight> IF <condition>`` clauses (one or more)."""
        return self._parse(text, "boosters")  # type: ignore[no-any-return]

    def _parse(self, text: str, start: str) -> Any:
        interactive = self._lark.parse_interactive(text, start=start)
        seen: list[Token] = []
        try:
            for token in interactive.iter_parse():
                seen.append(token)
            tree = interactive.feed_eof(seen[-1] if seen else None)
        except UnexpectedInput as exc:
            raise _syntax_error(text, exc, interactive, seen) from None
        _check_depth(tree)
        try:
            return self._to_ast.transform(tree)
        except VisitError as exc:
            if isinstance(exc.orig_exc, IQLError):
                raise exc.orig_exc from None
            raise


def _check_depth(tree: Any) -> None:
    """Raise ``IQLError`` at the first node nested deeper than ``MAX_DEPTH`` (iteratively: no recursion)."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            line, column = getattr(node.meta, "line", 1), getattr(node.meta, "column", 1)
            raise IQLError(line, column, f"at most {MAX_DEPTH} levels of nesting (NOT, parentheses, operators)",
                           "a deeper expression")
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))


def _syntax_error(text: str, exc: UnexpectedInput, interactive: Any, seen: list[Token]) -> IQLError:
    """Name the position, the tokens the parser would accept there, and what it found."""
    state = getattr(exc, "interactive_parser", None) or interactive
    expected = _expected(set(state.accepts()))
    if isinstance(exc, UnexpectedToken) and seen and seen[-1] is exc.token:
        seen = seen[:-1]  # the failing token was lexed but not accepted
    after = f"'{seen[-1]}'" if seen else None
    if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
        lines = text.split("\n")
        return IQLError(len(lines), len(lines[-1]) + 1, expected, "end of input", after)
    if isinstance(exc, UnexpectedToken):
        return IQLError(exc.token.line, exc.token.column, expected, f"'{exc.token}'", after)
    found = text[exc.pos_in_stream : exc.pos_in_stream + 1]
    if found in "\"'":
        return IQLError(exc.line, exc.column, "a closing quote", "an unterminated string", after)
    return IQLError(exc.line, exc.column, expected, f"'{found}'", after)


def _expected(names: set[str] | frozenset[str]) -> str:
    """Terminal names -> words: 'a value', 'a condition', or one of the tokens."""
    if _CONDITION_START <= names and "NAME" in names:
        return "a condition"
    if names & _VALUE_START:
        return "a value"
    shown = sorted({_display(n) for n in names})
    return shown[0] if len(shown) == 1 else "one of " + ", ".join(shown)


def _display(name: str) -> str:
    if name in _DISPLAY:
        return _DISPLAY[name]
    if name.startswith("_") or name in {"ANY"}:
        return f"'{name.lstrip('_')}'"
    literal = {"LPAR": "(", "RPAR": ")", "LSQB": "[", "RSQB": "]", "COMMA": ",", "DOT": "."}.get(name, name)
    return f"'{literal}'"
