"""IQL syntax tree: frozen dataclasses produced by the parser, consumed by the compiler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal as TLiteral

__all__ = [
    "Aggregate",
    "And",
    "Arith",
    "Attr",
    "Between",
    "BoosterClause",
    "Boosters",
    "Compare",
    "ContextRef",
    "Expr",
    "In",
    "IsNull",
    "ListOp",
    "ListValue",
    "Literal",
    "Node",
    "Not",
    "Now",
    "Operand",
    "Or",
    "Param",
    "Pos",
    "Truthy",
]


@dataclass(frozen=True, slots=True)
class Pos:
    """1-based line and column of the token a node starts at."""

    line: int
    column: int


# ---- operands (things that have a value) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant. ``kind`` is the literal's type; durations are numbers of seconds."""

    value: str | float | bool | None
    kind: TLiteral["string", "number", "bool", "timestamp", "duration"]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Attr:
    """An attribute of the catalogue item being filtered (``price``, ```base colour```)."""

    name: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class Param:
    """A request parameter (``$brand``), bound per request."""

    name: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class ContextRef:
    """``context.<scope>.<name>``: an attribute of the current item, the user, or each cart item."""

    scope: TLiteral["item", "user", "cart"]
    name: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class Aggregate:
    """``MIN|MAX|AVG|SUM|ANY(context.cart.<name>)``; ANY gives the set of values."""

    func: TLiteral["min", "max", "avg", "sum", "any"]
    ref: ContextRef
    pos: Pos


@dataclass(frozen=True, slots=True)
class Now:
    """``now()``: the request time in epoch seconds."""

    pos: Pos


@dataclass(frozen=True, slots=True)
class Arith:
    """Value arithmetic: ``now() - 7d``, ``context.item.price * 1.2``."""

    op: TLiteral["+", "-", "*", "/"]
    left: Operand
    right: Operand
    pos: Pos


@dataclass(frozen=True, slots=True)
class ListValue:
    """A bracketed or parenthesised list of operands: ``["a", "b"]``, ``($a, $b)``."""

    items: tuple[Operand, ...]
    pos: Pos


Operand = Literal | Attr | Param | ContextRef | Aggregate | Now | Arith

# ---- predicates (things that select items) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compare:
    """``left <op> right`` with op one of ``== != < <= > >=``."""

    op: TLiteral["==", "!=", "<", "<=", ">", ">="]
    left: Operand
    right: Operand
    pos: Pos


@dataclass(frozen=True, slots=True)
class In:
    """``operand [NOT] IN values``; values is a list or one set-valued operand."""

    operand: Operand
    values: ListValue | Operand
    negated: bool
    pos: Pos


@dataclass(frozen=True, slots=True)
class Between:
    """``operand [NOT] BETWEEN low AND high`` (both ends inclusive)."""

    operand: Operand
    low: Operand
    high: Operand
    negated: bool
    pos: Pos


@dataclass(frozen=True, slots=True)
class ListOp:
    """Multi-valued attribute tests: ``tags CONTAINS v``, ``tags ANY [..]``, ``tags ALL [..]``."""

    op: TLiteral["contains", "any", "all"]
    operand: Operand
    values: ListValue | Operand
    pos: Pos


@dataclass(frozen=True, slots=True)
class IsNull:
    """``operand IS [NOT] NULL``."""

    operand: Operand
    negated: bool
    pos: Pos


@dataclass(frozen=True, slots=True)
class Truthy:
    """A bare operand used as a condition (``in_stock``): true where it is boolean true."""

    operand: Operand
    pos: Pos


@dataclass(frozen=True, slots=True)
class And:
    """Conjunction of two or more conditions."""

    items: tuple[Expr, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Or:
    """Disjunction of two or more conditions."""

    items: tuple[Expr, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Not:
    """Negation: the live items the inner condition does not select."""

    item: Expr
    pos: Pos


Expr = Compare | In | Between | ListOp | IsNull | Truthy | And | Or | Not
Node = Expr | Operand | ListValue

# ---- boosters ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BoosterClause:
    """``BOOST <weight> IF <condition>``: multiply the score of matching items by weight."""

    weight: float
    condition: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class Boosters:
    """One or more booster clauses; multipliers of matching clauses multiply."""

    clauses: tuple[BoosterClause, ...]
