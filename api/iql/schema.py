"""Attribute types of the catalogue: inference from item values, normalisation, conflicts."""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from enum import StrEnum

import numpy as np

from api.iql.errors import CatalogSchemaError
from operators.catalog_rule import coerce_value

__all__ = ["NUMERIC_TYPES", "AttrType", "Schema", "is_iso_timestamp", "to_epoch_s"]

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")


class AttrType(StrEnum):
    """Type of an item attribute, as IQL sees it."""

    STRING = "string"
    NUMBER = "number"
    BOOL = "bool"
    TIMESTAMP = "timestamp"
    STRING_LIST = "list of strings"


NUMERIC_TYPES = frozenset({AttrType.NUMBER, AttrType.TIMESTAMP})


def is_iso_timestamp(value: object) -> bool:
    """True for an ISO-8601 date or date-time string (``2024-05-01``, ``2024-05-01T10:00:00Z``)."""
    return isinstance(value, str) and _ISO.match(value) is not None


def to_epoch_s(value: object) -> float:
    """datetime, date, ISO-8601 string or epoch-seconds number -> epoch seconds (naive = UTC).

    Raises
    ------
    ValueError
        If the value is none of these.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        if not _ISO.match(value):
            raise ValueError(f"not an ISO-8601 timestamp: {value!r}")
        value = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    raise ValueError(f"not a timestamp: {value!r}")


def _infer(value: object) -> AttrType | None:
    if isinstance(value, bool | np.bool_):
        return AttrType.BOOL
    if isinstance(value, numbers.Real):
        return AttrType.NUMBER
    if isinstance(value, date):
        return AttrType.TIMESTAMP
    if isinstance(value, str):
        return AttrType.TIMESTAMP if _ISO.match(value) else AttrType.STRING
    if isinstance(value, list | tuple | set | frozenset):
        return AttrType.STRING_LIST
    return None


def _normalize(value: object, kind: AttrType) -> object:
    """Value -> stored form (str, bool, float, tuple[str, ...]); None for null; ValueError if it does not fit."""
    if kind is AttrType.STRING:
        if isinstance(value, str):
            return value
    elif kind is AttrType.BOOL:
        if isinstance(value, bool | np.bool_):
            return bool(value)
    elif kind is AttrType.NUMBER:
        if isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
            number = float(value)
            return None if number != number else number
    elif kind is AttrType.TIMESTAMP:
        if not isinstance(value, bool | np.bool_):
            try:
                return to_epoch_s(value)
            except ValueError:
                pass
    elif isinstance(value, list | tuple | set | frozenset) and all(isinstance(v, str) for v in value):
        return tuple(dict.fromkeys(value))
    raise ValueError(kind)


def _fits(value: object, kind: AttrType) -> bool:
    try:
        _normalize(value, kind)
    except ValueError:
        return False
    return True


class Schema(Mapping[str, AttrType]):
    """Attribute name -> type, inferred from the first non-null value unless declared or fixed.

    An ISO-8601 string infers a timestamp; a later non-ISO string for it is then a conflict
    (declare the attribute as ``"string"`` to avoid that). Numbers are accepted for timestamps
    (epoch seconds). Types never change once set, which is what lets compiled plans be cached.

    Parameters
    ----------
    declared : mapping of str to AttrType or its value, optional
        Types fixed up front (``{"created_at": "timestamp"}``).
    fixed : mapping of str to AttrType or its value, optional
        Types an attribute takes when first seen instead of its first value's (the serving
        attributes: ``operators.catalog_rule.serving_kinds``); unlike ``declared`` the attribute is
        listed only once an item has it. A first value of another kind is coerced or rejected as
        any later value is, and is never skipped as unsupported.
    skip_unsupported : bool
        If true, an attribute whose first value IQL cannot index (a dict, a list of numbers such
        as an embedding) is listed in ``skipped`` and ignored from then on, instead of raising.
        Conflicts with an attribute's type always raise.
    """

    def __init__(
        self,
        declared: Mapping[str, AttrType | str] | None = None,
        skip_unsupported: bool = False,
        *,
        fixed: Mapping[str, AttrType | str] | None = None,
    ) -> None:
        self._types: dict[str, AttrType] = {k: AttrType(v) for k, v in (declared or {}).items()}
        self._fixed: dict[str, AttrType] = {k: AttrType(v) for k, v in (fixed or {}).items()}
        for name, kind in self._fixed.items():
            if self._types.get(name, kind) is not kind:
                raise ValueError(f"attribute {name!r} is declared a {self._types[name]}, but its type is fixed: {kind}")
        self.skip_unsupported = skip_unsupported
        self.skipped: set[str] = set()
        self.version = 0

    def __getitem__(self, name: str) -> AttrType:
        return self._types[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)

    def __repr__(self) -> str:
        return f"Schema({ {k: v.value for k, v in self._types.items()} })"

    def normalize(self, item_id: str, name: str, value: object) -> object:
        """Check ``value`` against the type of ``name`` (inferring it on first sight) and normalise it.

        Raises
        ------
        CatalogSchemaError
            If the value does not fit the attribute's type, or is of no supported kind.
        """
        if value is None or name in self.skipped:
            return None
        kind = self._types.get(name)
        if kind is None and (kind := self._fixed.get(name)) is None:
            kind = _infer(value)
            if self.skip_unsupported and (kind is None or not _fits(value, kind)):
                self.skipped.add(name)
                return None
            if kind is None:
                raise CatalogSchemaError(
                    item_id, name, "a string, number, bool, timestamp or list of strings", value
                )
        try:
            normalized = _normalize(value, kind)
        except ValueError:
            try:  # the catalog rule's coercions ("12.5" -> 12.5, "true" -> True, 123 -> "123"): operators/catalog_rule.py
                normalized = _normalize(coerce_value(name, value, kind.value), kind)
            except ValueError:
                why = "the fixed type of this serving attribute" if name in self._fixed else "its type in this catalogue"
                raise CatalogSchemaError(item_id, name, f"a {kind} ({why})", value) from None
        if name not in self._types:
            self._types[name] = kind
            self.version += 1
        return normalized

    def normalize_many(self, item_ids: list[str], name: str, values: list[object]) -> list[object]:
        """``normalize`` for a whole column (bulk builds): skips per-value checks for uniform types.

        Raises
        ------
        CatalogSchemaError
            As ``normalize``, naming the first offending item.
        """
        if values:
            self.normalize(item_ids[0], name, values[0])  # infer the type from the first value
        if name in self.skipped:
            return [None] * len(values)
        kind, types = self._types.get(name), set(map(type, values))
        if kind is AttrType.STRING and types == {str} or kind is AttrType.BOOL and types == {bool}:
            return values
        if kind in NUMERIC_TYPES and types <= {int, float}:
            return [None if v != v else float(v) for v in values]  # type: ignore[arg-type]
        if kind is AttrType.STRING_LIST and types == {list} and all(type(e) is str for v in values for e in v):  # type: ignore[attr-defined]
            return [tuple(dict.fromkeys(v)) for v in values]  # type: ignore[call-overload]
        return [self.normalize(i, name, v) for i, v in zip(item_ids, values, strict=True)]
