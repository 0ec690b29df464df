"""The catalog schema rule: which attribute values are coerced, which items are rejected — one rule for the
publisher (``fusionrec catalog``) and the API's index (api/catalog.py, api/iql/schema.py).

An attribute's type is fixed by its first non-null value (or declared): string, number, bool,
timestamp (ISO-8601 string or epoch seconds), list of strings. A later value of another kind is

================================  ====================================================
value, attribute type             result
================================  ====================================================
numeric string, number            coerced: ``"12.50"`` -> ``12.5`` (not NaN, not inf)
``"true"``/``"false"``, bool      coerced (case-insensitive; also ``"1"``/``"0"``)
integer, string                   coerced: ``123`` -> ``"123"``
anything else that does not fit   the **item is rejected**: not indexed, not served, not
                                  published by ``fusionrec catalog``; counted with the
                                  attribute and the reason
================================  ====================================================

``item_id`` follows the id rule (operators/ids.py). Attributes whose first value has no supported
kind (objects, lists of numbers) are left out of the index but kept in the item.

One attribute is not free (``check_item``, applied before the types above):

- ``deleted`` is a command, not an attribute: ``true`` deletes the item (a tombstone; the rest
  of the line is ignored), ``false`` or ``null`` keeps it live and is **dropped** from the item
  (neither published nor indexed); any other value (``"true"``, ``1``, ...) rejects the item,
  the reason saying to use true/false.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from operators.ids import BadId, canonical_id

__all__ = ["CatalogValueError", "coerce_value", "infer_kind", "check_item", "CatalogCheck",
           "check_catalog", "KINDS", "DELETED"]

KINDS = ("string", "number", "bool", "timestamp", "list of strings")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")
_NUMBER = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
DELETED = "deleted"
"""The command attribute: ``true`` deletes the item, ``false`` (or null) keeps it; not kept in the item."""


class CatalogValueError(ValueError):
    """A value that does not fit its attribute's type, even after coercion."""

    def __init__(self, attribute: str, kind: str, value: object) -> None:
        shown = value[:80] if isinstance(value, str) else value
        super().__init__(f"attribute {attribute!r} must be a {kind}; got {shown!r} ({type(value).__name__})")
        self.attribute, self.kind, self.value = attribute, kind, value


def infer_kind(value: object) -> str | None:
    """The type a first value fixes (``KINDS``), or None for a value IQL cannot index."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, numbers.Real):
        return "number"
    if isinstance(value, str):
        return "timestamp" if _ISO.match(value) else "string"
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return "list of strings"
    return None


def coerce_value(attribute: str, value: object, kind: str) -> object:
    """``value`` as a JSON value of ``kind`` by the module's rule (unchanged when it already fits).

    Raises
    ------
    CatalogValueError
        If it does not fit and no coercion applies.
    """
    if value is None:
        return None
    if kind == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    elif kind == "number":
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _NUMBER.match(value):
            number = float(value)
            if math.isfinite(number):
                return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number
    elif kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
    elif kind == "timestamp":
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _ISO.match(value):
            return value
    elif kind == "list of strings":
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return list(value)
    raise CatalogValueError(attribute, kind, value)


def check_item(item: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The rule's command for one item: ``deleted``.

    Applied by ``check_catalog`` (``fusionrec catalog``) and, before its index, by the API
    (api/catalog.py), for records read from the topic whoever published them.

    Returns
    -------
    None if the item deletes itself (``"deleted": true``); else the item without ``deleted``
    (the same mapping when it has none).

    Raises
    ------
    CatalogValueError
        For a ``deleted`` that is neither a JSON bool nor null.
    """
    if DELETED in item:
        deleted = item[DELETED]
        if deleted is True:
            return None
        if deleted is not False and deleted is not None:
            raise CatalogValueError(DELETED, "JSON bool: use true to delete the item or false to keep it", deleted)
        item = {k: v for k, v in item.items() if k != DELETED}  # a command, not an attribute
    return item


@dataclass
class CatalogCheck:
    """Outcome of ``check_catalog``: accepted items (coerced), deletes, rejections and coercion counts."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (position, item_id, reason)
    deleted: list[tuple[int, str]] = field(default_factory=list)  # (position, item_id): "deleted": true
    coerced: dict[str, int] = field(default_factory=dict)  # attribute -> values coerced
    kinds: dict[str, str] = field(default_factory=dict)


def check_catalog(items: Iterable[Mapping[str, Any]], declared: Mapping[str, str] | None = None,
                  exclude: Iterable[str] = ()) -> CatalogCheck:
    """Apply the rule to a batch of items, types fixed by the first value in the batch (or ``declared``).

    Parameters
    ----------
    items : iterable of mappings, each with an ``item_id``
    declared : mapping attribute -> kind, optional
    exclude : attributes not checked (modality payloads: vectors, image paths)

    Returns
    -------
    CatalogCheck; an item with an invalid id, a ``deleted`` that is not a JSON bool or a value that
    does not fit is rejected whole; ``"deleted": true`` is listed in ``deleted``.
    """
    out = CatalogCheck(kinds=dict(declared or {}))
    skip = set(exclude) | {"item_id"}
    for pos, item in enumerate(items):
        try:
            item_id = canonical_id(item.get("item_id"))
        except BadId as exc:
            out.rejected.append((pos, str(item.get("item_id"))[:80], f"item_id: {exc}"))
            continue
        try:
            kept = check_item(item)
        except CatalogValueError as exc:
            out.rejected.append((pos, item_id, str(exc)))
            continue
        if kept is None:
            out.deleted.append((pos, item_id))
            continue
        item = kept
        fixed = {**item, "item_id": item_id}
        try:
            for name, value in item.items():
                if name in skip or value is None:
                    continue
                kind = out.kinds.get(name)
                if kind is None:
                    kind = infer_kind(value)
                    if kind is None:
                        skip.add(name)  # not indexable: kept in the item, left out of IQL
                        continue
                    out.kinds[name] = kind
                new = coerce_value(name, value, kind)
                if new is not value and new != value or type(new) is not type(value):
                    fixed[name] = new
                    out.coerced[name] = out.coerced.get(name, 0) + 1
        except CatalogValueError as exc:
            out.rejected.append((pos, item_id, str(exc)))
            continue
        out.accepted.append(fixed)
    return out
