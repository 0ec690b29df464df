"""IQL syntax tree -> plan over the catalogue index, type-checked against the attribute schema.

Everything that can be rejected without a request is rejected here (so a campaign is validated
when it is saved): unknown attributes, operators that do not fit an attribute's type, literals
of the wrong type, comparisons of two attributes. Request parameters and user attributes are
typed by what they are compared with and coerced when bound (``api.iql.evaluate``).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from api.iql import ast
from api.iql import plan as p
from api.iql.errors import IQLError
from api.iql.schema import NUMERIC_TYPES, AttrType, to_epoch_s

__all__ = ["compile_boosters", "compile_filter"]

_FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_LITERAL_TYPES = {
    "string": AttrType.STRING,
    "number": AttrType.NUMBER,
    "duration": AttrType.NUMBER,
    "bool": AttrType.BOOL,
    "timestamp": AttrType.TIMESTAMP,
}
Typed = tuple[p.ValueNode, AttrType | None]


def compile_filter(expr: ast.Expr, schema: Mapping[str, AttrType], text: str = "") -> p.FilterPlan:
    """Compile a parsed filter against the catalogue's attribute types.

    Raises
    ------
    IQLError
        At the offending node: unknown attribute, type mismatch, unsupported operator for a type.
    """
    compiler = _Compiler(schema)
    root = compiler.expr(expr)
    return p.FilterPlan(text, root, frozenset(compiler.attributes), frozenset(compiler.params))


def compile_boosters(boosters: ast.Boosters, schema: Mapping[str, AttrType], text: str = "") -> p.BoosterPlan:
    """Compile ``BOOST w IF cond`` clauses; same checks as ``compile_filter``."""
    compiler = _Compiler(schema)
    clauses = tuple((c.weight, compiler.expr(c.condition)) for c in boosters.clauses)
    return p.BoosterPlan(text, clauses, frozenset(compiler.attributes), frozenset(compiler.params))


def _describe(node: ast.Node) -> str:
    match node:
        case ast.Literal(value=value, kind=kind):
            return f"{kind} {value!r}"
        case ast.Attr(name=name):
            return f"attribute '{name}'"
        case ast.Param(name=name):
            return f"parameter ${name}"
        case ast.ContextRef(scope=scope, name=name):
            return f"context.{scope}.{name}"
        case ast.Aggregate(func=func, ref=ref):
            return f"{func.upper()}(context.cart.{ref.name})"
        case ast.Now():
            return "now()"
        case ast.ListValue():
            return "a list"
    return "an expression"


class _Compiler:
    def __init__(self, schema: Mapping[str, AttrType]) -> None:
        self.schema = schema
        self.attributes: set[str] = set()
        self.params: set[str] = set()

    # ---- conditions ----------------------------------------------------------------------------

    def expr(self, node: ast.Expr) -> p.PlanNode:
        match node:
            case ast.And(items=items):
                return p.AllOf(tuple(self.expr(i) for i in items))
            case ast.Or(items=items):
                return p.AnyOf(tuple(self.expr(i) for i in items))
            case ast.Not(item=item):
                return p.Negate(self.expr(item))
            case ast.Compare():
                return self.compare(node)
            case ast.In():
                return self.in_(node)
            case ast.Between():
                return self.between(node)
            case ast.ListOp():
                return self.list_op(node)
            case ast.IsNull(operand=ast.Attr() as attr, negated=negated):
                self.attribute(attr)
                return p.NullTest(attr.name, negated)
            case ast.IsNull(operand=operand, negated=negated):
                value, _ = self.value(operand, None, many=True)
                return p.ConstTest("is_not_null" if negated else "is_null", value, None)
            case ast.Truthy(operand=ast.Attr() as attr):
                kind = self.attribute(attr)
                if kind is not AttrType.BOOL:
                    raise IQLError(
                        attr.pos.line,
                        attr.pos.column,
                        f"a condition ({attr.name} is a {kind}; compare it, e.g. with '==')",
                        f"attribute '{attr.name}'",
                    )
                return p.Match(attr.name, "eq", p.Const(True))
            case ast.Truthy(operand=operand):
                value, _ = self.value(operand, AttrType.BOOL)
                return p.ConstTest("truthy", value, None, AttrType.BOOL)
        raise AssertionError(f"unknown node {node!r}")  # pragma: no cover

    def compare(self, node: ast.Compare) -> p.PlanNode:
        left, right, op = node.left, node.right, node.op
        if not isinstance(left, ast.Attr) and isinstance(right, ast.Attr):
            left, right, op = right, left, _FLIP[op]  # type: ignore[assignment]
        if not isinstance(left, ast.Attr):
            lv, lt = self.value(left, None, many=True)
            rv, rt = self.value(right, lt, many=True)
            if lt is None and rt is not None:
                lv, lt = self.value(left, rt, many=True)
            return p.ConstTest(op, lv, rv, lt or rt)
        kind = self.attribute(left)
        if kind is AttrType.STRING_LIST:
            raise self._op_error(node, f"CONTAINS, ANY or ALL ({left.name} is a list of strings)", op)
        if kind not in NUMERIC_TYPES and op not in ("==", "!="):
            raise self._op_error(node, f"'==' or '!=' ({left.name} is a {kind})", op)
        value, _ = self.value(right, kind, many=op in ("==", "!="))
        if op == "==":
            return p.Match(left.name, "eq", value)
        if op == "!=":
            return p.Match(left.name, "ne", value)
        low, high = (value, None) if op in (">", ">=") else (None, value)
        return p.Range(left.name, low, high, op == ">=", op == "<=")

    def in_(self, node: ast.In) -> p.PlanNode:
        op = "not_in" if node.negated else "in"
        if not isinstance(node.operand, ast.Attr):
            value, kind = self.value(node.operand, None)
            return p.ConstTest(op, value, self.values(node.values, kind), kind)
        kind = self.attribute(node.operand)
        if kind is AttrType.STRING_LIST:
            raise self._op_error(
                node,
                f"ANY or ALL ({node.operand.name} is a list of strings)",
                "NOT IN" if node.negated else "IN",
            )
        return p.Match(node.operand.name, op, self.values(node.values, kind))  # type: ignore[arg-type]

    def between(self, node: ast.Between) -> p.PlanNode:
        if not isinstance(node.operand, ast.Attr):
            value, kind = self.value(node.operand, None)
            low, _ = self.value(node.low, kind)
            high, _ = self.value(node.high, kind)
            inside = p.AllOf((p.ConstTest(">=", value, low, kind), p.ConstTest("<=", value, high, kind)))
            return p.Negate(inside) if node.negated else inside
        kind = self.attribute(node.operand)
        if kind not in NUMERIC_TYPES:
            raise self._op_error(
                node,
                f"a number or timestamp attribute before BETWEEN ({node.operand.name} is a {kind})",
                node.operand.name,
            )
        low, _ = self.value(node.low, kind)
        high, _ = self.value(node.high, kind)
        return p.Range(node.operand.name, low, high, True, True, node.negated)

    def list_op(self, node: ast.ListOp) -> p.PlanNode:
        keyword = node.op.upper()
        if not isinstance(node.operand, ast.Attr):
            value, _ = self.value(node.operand, None, many=True)
            if node.op == "contains":
                element, _ = self.value(node.values, AttrType.STRING)  # type: ignore[arg-type]
                return p.ConstTest("contains", value, element, AttrType.STRING)
            return p.ConstTest(node.op, value, self.values(node.values, AttrType.STRING), AttrType.STRING)
        kind = self.attribute(node.operand)
        if kind is not AttrType.STRING_LIST:
            hint = "'==' or IN" if node.op != "all" else "'=='"
            raise self._op_error(
                node,
                f"a list attribute before {keyword} ({node.operand.name} is a {kind}; use {hint})",
                node.operand.name,
            )
        if node.op == "contains":
            if isinstance(node.values, ast.ListValue):
                raise IQLError(
                    node.values.pos.line,
                    node.values.pos.column,
                    "one value after CONTAINS (use ANY or ALL for several)",
                    "a list",
                )
            value, _ = self.value(node.values, AttrType.STRING, many=True)
            return p.Match(node.operand.name, "contains", value)
        return p.Match(node.operand.name, node.op, self.values(node.values, AttrType.STRING))

    # ---- values --------------------------------------------------------------------------------

    def attribute(self, node: ast.Attr) -> AttrType:
        kind = self.schema.get(node.name)
        if kind is None:
            close = difflib.get_close_matches(node.name, list(self.schema), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise IQLError(
                node.pos.line,
                node.pos.column,
                f"an attribute of the catalogue{hint}",
                f"unknown attribute '{node.name}'",
            )
        self.attributes.add(node.name)
        return kind

    def values(self, node: ast.ListValue | ast.Operand, expect: AttrType | None) -> p.ValueNode:
        """A set of values: a literal list, or one set-valued operand (``$brands``, ``ANY(context.cart.brand)``)."""
        if isinstance(node, ast.ListValue):
            items = tuple(self.value(item, expect, many=True)[0] for item in node.items)
            if all(isinstance(i, p.Const) for i in items):
                return p.Const(frozenset(i.value for i in items))  # type: ignore[union-attr]
            return p.ValueList(items)
        return self.value(node, expect, many=True)[0]

    def value(self, node: ast.Operand, expect: AttrType | None, *, many: bool = False) -> Typed:
        """Compile a value operand and check it against ``expect`` (the attribute's or element's type)."""
        match node:
            case ast.Literal(value=value, kind="string") if expect is AttrType.TIMESTAMP:
                try:
                    return p.Const(to_epoch_s(value)), AttrType.TIMESTAMP
                except ValueError:
                    raise IQLError(
                        node.pos.line, node.pos.column, "an ISO-8601 timestamp", _describe(node)
                    ) from None
            case ast.Literal(value=value, kind=kind):
                self._check(expect, _LITERAL_TYPES[kind], node)
                return p.Const(value), _LITERAL_TYPES[kind]
            case ast.Attr():
                raise IQLError(
                    node.pos.line,
                    node.pos.column,
                    "a value (comparing two attributes is not supported)",
                    _describe(node),
                )
            case ast.Param(name=name):
                self.params.add(name)
                return p.ParamValue(name, expect, node.pos, many), expect
            case ast.ContextRef(scope="user", name=name):
                return p.ContextValue("user", name, expect, node.pos, many), expect
            case ast.ContextRef(scope=scope, name=name):
                kind = self._context_attribute(node)
                element = AttrType.STRING if kind is AttrType.STRING_LIST else kind
                self._check(expect, element, node)
                if scope == "cart":
                    return self._many(p.CartValue("any", name, element, node.pos), node, many), element
                if kind is AttrType.STRING_LIST:
                    self._many(None, node, many)
                return p.ContextValue("item", name, element, node.pos, kind is AttrType.STRING_LIST), element
            case ast.Aggregate(func="any", ref=ref):
                kind = self._context_attribute(ref)
                element = AttrType.STRING if kind is AttrType.STRING_LIST else kind
                self._check(expect, element, ref)
                return self._many(p.CartValue("any", ref.name, element, node.pos), node, many), element
            case ast.Aggregate(func=func, ref=ref):
                kind = self._context_attribute(ref)
                if kind not in NUMERIC_TYPES:
                    raise IQLError(
                        ref.pos.line,
                        ref.pos.column,
                        f"a number or timestamp attribute inside {func.upper()}()",
                        f"{_describe(ref)} (a {kind})",
                    )
                self._check(expect, kind, node)
                return p.CartValue(func, ref.name, kind, node.pos), kind
            case ast.Now():
                self._check(expect, AttrType.TIMESTAMP, node)
                return p.NowValue(), AttrType.TIMESTAMP
            case ast.Arith(op=op, left=left, right=right):
                lv, lt = self.value(left, AttrType.NUMBER)
                rv, rt = self.value(right, AttrType.NUMBER)
                kind = (
                    AttrType.TIMESTAMP if AttrType.TIMESTAMP in (lt, rt) and op in "+-" else AttrType.NUMBER
                )
                self._check(expect, kind, node)
                return p.ArithValue(op, lv, rv, node.pos), kind
        raise AssertionError(f"unknown operand {node!r}")  # pragma: no cover

    def _context_attribute(self, node: ast.ContextRef) -> AttrType:
        kind = self.schema.get(node.name)
        if kind is None:
            raise IQLError(
                node.pos.line,
                node.pos.column,
                f"an attribute of the catalogue after context.{node.scope}.",
                f"unknown attribute '{node.name}'",
            )
        return kind

    @staticmethod
    def _many(value: p.ValueNode | None, node: ast.Node, many: bool) -> p.ValueNode:
        if not many:
            pos = node.pos  # type: ignore[union-attr]
            raise IQLError(
                pos.line,
                pos.column,
                "a single value (use IN, ANY or '==' for a set of values)",
                f"the set {_describe(node)}",
            )
        return value  # type: ignore[return-value]

    @staticmethod
    def _check(expect: AttrType | None, found: AttrType | None, node: ast.Node) -> None:
        if expect is None or found is None or expect is found:
            return
        if expect in NUMERIC_TYPES and found in NUMERIC_TYPES:
            return
        pos = node.pos  # type: ignore[union-attr]
        found_text = _describe(node) if isinstance(node, ast.Literal) else f"{_describe(node)} (a {found})"
        raise IQLError(pos.line, pos.column, f"a {expect}", found_text)

    @staticmethod
    def _op_error(node: ast.Expr, expected: str, found: str) -> IQLError:
        return IQLError(node.pos.line, node.pos.column, expected, f"'{found}'")
