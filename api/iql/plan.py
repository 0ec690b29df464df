"""Compiled IQL plans: value nodes bound per request and predicate nodes run on the catalogue index."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from api.iql.ast import Pos
from api.iql.schema import AttrType

__all__ = [
    "AllOf",
    "AnyOf",
    "ArithValue",
    "BoosterPlan",
    "CartValue",
    "Const",
    "ConstTest",
    "ContextValue",
    "FilterPlan",
    "Match",
    "Negate",
    "NowValue",
    "NullTest",
    "ParamValue",
    "PlanNode",
    "Range",
    "ValueList",
    "ValueNode",
]

# ---- values: known at compile time (Const) or bound per request -------------------------------


@dataclass(frozen=True, slots=True)
class Const:
    """A value fixed at compile time: str, float (numbers, epoch seconds), bool or a frozenset of them."""

    value: object


@dataclass(frozen=True, slots=True)
class ParamValue:
    """Request parameter ``$name``, coerced to ``expect`` when bound."""

    name: str
    expect: AttrType | None
    pos: Pos
    many: bool = False


@dataclass(frozen=True, slots=True)
class ContextValue:
    """``context.item.<name>`` or ``context.user.<name>``; None when absent."""

    scope: Literal["item", "user"]
    name: str
    expect: AttrType | None
    pos: Pos
    many: bool = False


@dataclass(frozen=True, slots=True)
class CartValue:
    """``MIN|MAX|AVG|SUM(context.cart.<name>)`` (a number or None) or ANY / bare (the set of values)."""

    func: Literal["min", "max", "avg", "sum", "any"]
    name: str
    expect: AttrType | None
    pos: Pos


@dataclass(frozen=True, slots=True)
class NowValue:
    """The request time, epoch seconds."""


@dataclass(frozen=True, slots=True)
class ArithValue:
    """``left op right`` on numbers; None if either side is None."""

    op: Literal["+", "-", "*", "/"]
    left: ValueNode
    right: ValueNode
    pos: Pos


@dataclass(frozen=True, slots=True)
class ValueList:
    """A list of values, bound to a frozenset (nulls dropped, nested sets flattened)."""

    items: tuple[ValueNode, ...]


ValueNode = Const | ParamValue | ContextValue | CartValue | NowValue | ArithValue | ValueList

# ---- predicates: each evaluates to a BitMap of item_idx ----------------------------------------


@dataclass(frozen=True, slots=True)
class Match:
    """Value-set tests on one attribute's column.

    ``eq``/``ne`` take one value, ``in``/``not_in``/``any``/``all`` a set, ``contains`` one value or a
    set (list attributes). ``ne`` and ``not_in`` select only items where the attribute is present.
    """

    attribute: str
    op: Literal["eq", "ne", "in", "not_in", "contains", "any", "all"]
    value: ValueNode


@dataclass(frozen=True, slots=True)
class Range:
    """``low <(=) attribute <(=) high`` on a numeric or timestamp attribute; ``negated`` = present minus it."""

    attribute: str
    low: ValueNode | None
    high: ValueNode | None
    low_inclusive: bool
    high_inclusive: bool
    negated: bool = False


@dataclass(frozen=True, slots=True)
class NullTest:
    """``attribute IS [NOT] NULL``: live items without (with) a value."""

    attribute: str
    negated: bool


@dataclass(frozen=True, slots=True)
class ConstTest:
    """A condition on values only (no attribute): all live items if true, none if false.

    ``op`` is a comparison, ``in``/``not_in``, ``contains``, ``is_null``/``is_not_null`` or ``truthy``.
    """

    op: str
    left: ValueNode
    right: ValueNode | None
    expect: AttrType | None = None


@dataclass(frozen=True, slots=True)
class AllOf:
    """Intersection of the children."""

    items: tuple[PlanNode, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Union of the children."""

    items: tuple[PlanNode, ...]


@dataclass(frozen=True, slots=True)
class Negate:
    """Live items not selected by the child."""

    item: PlanNode


PlanNode = Match | Range | NullTest | ConstTest | AllOf | AnyOf | Negate


@dataclass(frozen=True, slots=True)
class FilterPlan:
    """A compiled filter: its root, the attributes and request parameters it uses."""

    text: str
    root: PlanNode
    attributes: frozenset[str] = field(default_factory=frozenset)
    params: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class BoosterPlan:
    """Compiled ``BOOST w IF cond`` clauses: (weight, condition) pairs in text order."""

    text: str
    clauses: tuple[tuple[float, PlanNode], ...]
    attributes: frozenset[str] = field(default_factory=frozenset)
    params: frozenset[str] = field(default_factory=frozenset)
