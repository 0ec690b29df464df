"""Run a compiled IQL plan: bind request values, combine column bitmaps -> BitMap of item_idx.

Null semantics (SQL-like, two-valued at the top): a comparison, IN, BETWEEN, CONTAINS/ANY/ALL is
true only where the attribute has a value, and false when the value it is compared with is null
(a missing parameter is an error, but a missing ``context.item`` attribute is null). ``!=``,
``NOT IN`` and ``NOT BETWEEN`` likewise select only items with a value. ``NOT cond`` is every
live item ``cond`` does not select, nulls included. Results are always within ``index.live``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pyroaring import BitMap

from api.iql import plan as p
from api.iql.bitmaps import bitmap_of, indices_of
from api.iql.context import RequestContext
from api.iql.errors import IQLError
from api.iql.index import CatalogIndex
from api.iql.numeric import NumericColumn
from api.iql.schema import NUMERIC_TYPES, AttrType, to_epoch_s

__all__ = ["bind_param", "candidates_mask", "check_params", "evaluate", "param_control_char", "param_names"]

_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?nan", re.ASCII | re.IGNORECASE)
"""A number given as text (a request's ``$param``, a context attribute): ASCII decimal, or NaN (read as absent)."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""Unicode category Cc (C0 and C1 controls, DEL): no ``$param`` value may hold one."""


def param_control_char(value: object) -> str | None:
    """The first control character (Unicode category Cc) of a ``$param`` value, a string or a list of values,
    as ``U+XXXX``; None if it holds none. Request parameters and campaign defaults are refused with it (422).

    Examples
    --------
    >>> param_control_char(["Acme", "Bo\\x00lt"]), param_control_char("Acme")
    ('U+0000', None)
    """
    for text in value if isinstance(value, list | tuple) else [value]:
        found = _CONTROL.search(text) if isinstance(text, str) else None
        if found is not None:
            return f"U+{ord(found.group()):04X}"
    return None


def evaluate(plan: p.FilterPlan | p.PlanNode, index: CatalogIndex, context: RequestContext) -> BitMap:
    """Items (item_idx) selected by ``plan`` for this request.

    Raises
    ------
    IQLError
        If a request parameter is missing or cannot be coerced to the type it is compared with.
    """
    root = plan.root if isinstance(plan, p.FilterPlan) else plan
    run = _Run(index, context)
    for param in _param_values(root):  # every parameter, whatever the data: AND stops early on an empty side
        run.bind(param)
    return run.node(root) & index.live


def param_names(plan: object) -> list[str]:
    """Names of every ``$param`` a compiled filter or booster plan reads, in text order (repeats kept)."""
    return [v.name for v in _param_values(plan)]


def bind_param(node: p.ParamValue, params: Mapping[str, Any]) -> Any:
    """The value of ``$name`` from ``params``, coerced to what the plan compares it with (see ``coerce``).

    Raises
    ------
    IQLError
        If ``params`` lacks the parameter or its value does not fit its use (``param`` names it).
    """
    if node.name not in params:
        raise IQLError(node.pos.line, node.pos.column, f"a value for request parameter ${node.name}", "none",
                       param=node.name)
    return coerce(params[node.name], node.expect, f"${node.name}", node.pos, node.many)


def check_params(plan: object, params: Mapping[str, Any]) -> None:
    """Bind every ``$param`` of ``plan`` that ``params`` gives, as each request does (``bind_param``).

    A campaign's saved defaults are checked with it: a default that fails here would fail every
    request that does not override it. Parameters ``params`` lacks are skipped (requests give them).

    Raises
    ------
    IQLError
        For the first parameter, in text order, whose value does not fit its use.
    """
    for node in _param_values(plan):
        if node.name in params:
            bind_param(node, params)


def _param_values(node: object) -> list[p.ParamValue]:
    """Every ``$param`` of a plan subtree, in text order (plan nodes are dataclasses, tuples of them)."""
    if isinstance(node, p.ParamValue):
        return [node]
    if isinstance(node, tuple | list):
        return [v for child in node for v in _param_values(child)]
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return [v for f in dataclasses.fields(node) for v in _param_values(getattr(node, f.name))]
    return []


def candidates_mask(selected: BitMap, candidates: NDArray[np.integer]) -> NDArray[np.bool_]:
    """Boolean mask over ``candidates`` (item_idx, any order): True where the item is in ``selected``."""
    cand = np.asarray(candidates)
    if cand.size == 0:
        return np.zeros(0, dtype=bool)
    valid = cand >= 0
    inside = selected & bitmap_of(np.unique(cand[valid]))
    return valid & np.isin(cand, indices_of(inside))


def coerce(value: Any, expect: AttrType | None, where: str, pos: Any, many: bool = False,
           param: str | None = None) -> Any:
    """A bound value in the form columns store: float, str, bool, frozenset of those, or None.

    ``param`` is the request parameter the value came from, named by the error (``$name`` is ``name``
    without it; a ``context.user.<a>`` given as ``user.<a>`` passes ``"user.<a>"``).

    Raises
    ------
    IQLError
        Naming ``where`` (``$price_max``, ``context.user.segment``) at ``pos``, and ``param``.
    """
    if value is None:
        return None
    dollar = where.startswith("$")
    param = where[1:] if dollar else param
    if isinstance(value, list | tuple | set | frozenset):
        if not many:
            raise IQLError(pos.line, pos.column, f"a single value for {where}", f"{list(value)!r}", param=param)
        return frozenset(v for v in (coerce(x, expect, where, pos, param=param) for x in value) if v is not None)
    if expect is None:
        return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else value
    try:
        if expect in NUMERIC_TYPES:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, str) and expect is AttrType.TIMESTAMP and "-" in value[1:]:
                return to_epoch_s(value)
            if isinstance(value, str) and not _DECIMAL.fullmatch(value.strip()):
                raise ValueError  # float() also reads "٣", "1_000" and "infinity": a number here is ASCII decimal
            number = float(value)
            if param is not None and not math.isfinite(number):  # &max_price=nan / 1e999, &user.budget=1e999:
                raise ValueError  # a 400, not an empty list (nan) or every item (1e999 is inf, as 'inf' is refused)
            if math.isnan(number):
                return None
            return number
        if expect is AttrType.BOOL:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "false", "0"):
                return text in ("true", "1")
            raise ValueError
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise ValueError
    except (TypeError, ValueError):
        raise IQLError(pos.line, pos.column, f"a {expect} for {where}", f"{value!r}", param=param) from None


class _Run:
    """One evaluation: binds value nodes against the request and walks predicate nodes."""

    def __init__(self, index: CatalogIndex, context: RequestContext) -> None:
        self.index, self.ctx = index, context

    # ---- values --------------------------------------------------------------------------------

    def bind(self, node: p.ValueNode) -> Any:
        match node:
            case p.Const(value=value):
                return value
            case p.ParamValue():
                return bind_param(node, self.ctx.params)
            case p.ContextValue(scope=scope, name=name, expect=expect, pos=pos, many=many):
                source = self.ctx.item if scope == "item" else self.ctx.user
                raw = None if source is None else source.get(name)
                given = f"user.{name}" if scope == "user" and f"user.{name}" in self.ctx.params else None
                return coerce(raw, expect, f"context.{scope}.{name}", pos, many, param=given)
            case p.CartValue(func=func, name=name, expect=expect, pos=pos):
                return self._cart(func, name, expect, pos)
            case p.NowValue():
                return float(self.ctx.now_s)
            case p.ArithValue(op=op, left=left, right=right):
                a, b = self.bind(left), self.bind(right)
                if a is None or b is None:
                    return None
                if op == "/":
                    result = a / b if b else None
                else:
                    result = a + b if op == "+" else a - b if op == "-" else a * b
                # an overflow (1e308 * 10) or inf - inf is null, as a division by zero is: a NaN bound made
                # ``price < NaN`` select every priced item (numpy sorts NaN last), an inf one every item
                return result if result is not None and math.isfinite(result) else None
            case p.ValueList(items=items):
                out: set[Any] = set()
                for item in items:
                    value = self.bind(item)
                    if isinstance(value, frozenset):
                        out |= value
                    elif value is not None:
                        out.add(value)
                return frozenset(out)
        raise AssertionError(f"unknown value node {node!r}")  # pragma: no cover

    def _cart(self, func: str, name: str, expect: AttrType | None, pos: Any) -> Any:
        where = f"context.cart.{name}"
        values: list[Any] = []
        for item in self.ctx.cart:
            value = coerce(item.get(name), expect, where, pos, many=True)
            if isinstance(value, frozenset):
                values.extend(value)
            elif value is not None:
                values.append(value)
        if func == "any":
            return frozenset(values)
        if not values:
            return None
        if func == "min":
            return min(values)
        if func == "max":
            return max(values)
        total = float(sum(values))
        if func == "avg":
            mean = total / len(values)
            return mean if math.isfinite(mean) else sum(v / len(values) for v in values)  # finite values: finite mean
        # cart prices near the float range sum to inf, which would make ``price < SUM(...)`` select every priced
        # item: null, as an arithmetic result beyond the range is
        return total if math.isfinite(total) else None

    # ---- predicates ----------------------------------------------------------------------------

    def node(self, node: p.PlanNode) -> BitMap:
        match node:
            case p.AllOf(items=items):
                return self._all_of(items)
            case p.AnyOf(items=items):
                return BitMap.union(*(self.node(i) for i in items))
            case p.Negate(item=item):
                return self.index.live - self.node(item)
            case p.Match():
                return self._match(node)
            case p.Range():
                return self._range(node)
            case p.NullTest(attribute=name, negated=negated):
                column = self.index.column(name)
                present = column.present if column is not None else BitMap()
                return present if negated else self.index.live - present
            case p.ConstTest():
                return self.index.live if self._const(node) else BitMap()
        raise AssertionError(f"unknown plan node {node!r}")  # pragma: no cover

    def _all_of(self, items: tuple[p.PlanNode, ...]) -> BitMap:
        """Intersect the positive children, then subtract negated ones (no complement of live needed)."""
        positive = [i for i in items if not isinstance(i, p.Negate)]
        negated = [i.item for i in items if isinstance(i, p.Negate)]
        maps = []
        for item in positive:
            result = self.node(item)
            if not result:
                return BitMap()
            maps.append(result)
        selected = BitMap.intersection(*maps) if maps else self.index.live
        for item in negated:
            selected = selected - self.node(item)
            if not selected:
                break
        return selected

    def _match(self, node: p.Match) -> BitMap:
        column = self.index.column(node.attribute)
        value = self.bind(node.value)
        if column is None or value is None:
            return BitMap()
        op = node.op
        if isinstance(value, frozenset):
            op = {"eq": "in", "ne": "not_in", "contains": "any"}.get(op, op)  # type: ignore[assignment]
        elif op in ("in", "not_in", "any", "all"):
            value = frozenset((value,))  # a list parameter given once (``&bs=Acme``) is a list of one
        if op in ("eq", "contains"):
            return column.eq(value)
        if op == "ne":
            return column.present - column.eq(value)
        if op in ("in", "any"):
            return column.any_of(value)
        if op == "not_in":
            return column.present - column.any_of(value)
        return column.all_of(value)  # type: ignore[union-attr]

    def _range(self, node: p.Range) -> BitMap:
        column = self.index.column(node.attribute)
        low = None if node.low is None else self.bind(node.low)
        high = None if node.high is None else self.bind(node.high)
        if (
            not isinstance(column, NumericColumn)
            or (node.low is not None and low is None)
            or (node.high is not None and high is None)
        ):
            return BitMap()
        inside = column.range(low, high, node.low_inclusive, node.high_inclusive)
        return column.present - inside if node.negated else inside

    def _const(self, node: p.ConstTest) -> bool:
        left = self.bind(node.left)
        right = None if node.right is None else self.bind(node.right)
        if node.op == "is_null":
            return left is None
        if node.op == "is_not_null":
            return left is not None
        if node.op == "truthy":
            return left is True
        if left is None or right is None:
            return False
        if node.op in ("in", "not_in", "any"):
            right = right if isinstance(right, frozenset) else frozenset((right,))  # never a substring test
            hit = bool(left & right) if isinstance(left, frozenset) else left in right
            return hit if node.op != "not_in" else not hit
        if node.op in ("contains", "all"):
            needed = right if isinstance(right, frozenset) else {right}
            return isinstance(left, frozenset) and needed <= left
        try:
            return bool(_COMPARE[node.op](left, right))
        except TypeError:
            return False


_COMPARE = {
    "==": lambda a, b: a in b if isinstance(b, frozenset) else a == b,
    "!=": lambda a, b: a not in b if isinstance(b, frozenset) else a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
