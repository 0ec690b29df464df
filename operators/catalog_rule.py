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

The serving attributes (``api.hidden_attribute``, ``api.in_stock_attribute``, ``api.stock_attribute``:
``hidden``, ``in_stock``, ``stock``) have fixed types whatever value comes first (``serving_kinds``):
``hidden`` and ``in_stock`` are bools, ``stock`` is a number, so ``"hidden": "true"`` first is
coerced to ``true`` (the item hidden), not made a string attribute that serves it and then rejects
a later ``true``; ``"hidden": "maybe"`` rejects the item.

``item_id`` follows the id rule (operators/ids.py). Attributes whose first value has no supported
kind (objects, lists of numbers) are left out of the index but kept in the item.

Two attributes are not free (``check_item``, applied before the types above):

- ``deleted`` is a command, not an attribute: ``true`` deletes the item (a tombstone; the rest
  of the line is ignored), ``false`` or ``null`` keeps it live and is **dropped** from the item
  (neither published nor indexed); any other value (``"true"``, ``1``, ...) rejects the item,
  the reason saying to use true/false.
- the vector attribute (``api.vector_attribute``), when not null, must be a flat JSON array of
  finite numbers (ints or floats; not bools, strings, null or nested arrays; finite as float32),
  of ``api.vector_dim`` numbers when that is set; anything else rejects the item
  (``check_vector``). With ``api.vector_dim`` unset the API's vector index takes the first
  vector's length and leaves a vector of another length out of visual similarity (logged), the
  item still served: the rule cannot know that length (the file's first vector need not be the
  topic's).

Sizes (``check_size``, ``CatalogLimits`` from ``api.catalog_max_value_bytes``,
``api.catalog_max_attributes``, ``api.catalog_max_item_bytes``): an item with a string value (or a
string in a list) longer than ``max_value_bytes`` in UTF-8, more than ``max_attributes`` attributes
besides ``item_id``, or a record longer than ``max_item_bytes`` as compact JSON is rejected
(``CatalogSizeError``, naming the attribute), by the publisher and the API's index alike.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from numpy.typing import NDArray

from operators.ids import BadId, canonical_id

if TYPE_CHECKING:
    from operators.settings import ApiSettings

__all__ = ["CatalogValueError", "CatalogSizeError", "CatalogLimits", "check_size", "check_new_names", "coerce_value", "infer_kind", "check_vector", "check_item", "CatalogCheck",
           "check_catalog", "serving_kinds", "KINDS", "DELETED"]

KINDS = ("string", "number", "bool", "timestamp", "list of strings")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")
_NUMBER = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
DELETED = "deleted"
"""The command attribute: ``true`` deletes the item, ``false`` (or null) keeps it; not kept in the item."""
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMBER_TYPES = frozenset((int, float))


class CatalogValueError(ValueError):
    """A value that does not fit its attribute's type, even after coercion."""

    def __init__(self, attribute: str, kind: str, value: object) -> None:
        shown = repr(value[:80] if isinstance(value, str) else value)
        if not isinstance(value, str) and len(shown) > 80:  # a long vector: its start
            shown = shown[:80] + "..."
        super().__init__(f"attribute {attribute!r} must be a {kind}; got {shown} ({type(value).__name__})")
        self.attribute, self.kind, self.value = attribute, kind, value


class CatalogSizeError(CatalogValueError):
    """An item over a size limit (``CatalogLimits``): ``attribute`` names the value over it (for the
    whole record, its largest attribute), ``size`` and ``limit`` are the two numbers, ``setting`` the
    setting to raise if the item is meant."""

    def __init__(self, attribute: str, what: str, size: int, limit: int, setting: str) -> None:  # what: with the size
        ValueError.__init__(self, f"{what}; at most {limit:,} ({setting})")
        self.attribute, self.kind, self.value = attribute, "size", size
        self.size, self.limit, self.setting = size, limit, setting


@dataclass(frozen=True, slots=True)
class CatalogLimits:
    """Size limits of one catalog item (``api.catalog_max_*``; the defaults and why are in the settings)."""

    max_value_bytes: int  # one string value, or one string of a list, UTF-8 bytes
    max_attributes: int  # attributes besides item_id
    max_item_bytes: int  # the item as compact JSON (the catalog record), bytes
    max_attribute_names: int | None = None  # distinct indexed names over the whole catalog; None: no limit

    @classmethod
    def from_settings(cls, a: ApiSettings) -> CatalogLimits:
        """The limits of the ``[api]`` settings (``catalog_max_value_bytes``, ``catalog_max_attributes``,
        ``catalog_max_item_bytes``, ``catalog_max_attribute_names``)."""
        return cls(a.catalog_max_value_bytes, a.catalog_max_attributes, a.catalog_max_item_bytes,
                   a.catalog_max_attribute_names)


def check_new_names(new: Collection[str], known: int, limit: int | None) -> None:
    """The catalog-wide width rule: an item may bring attribute names the catalog does not hold yet only while
    the catalog stays within ``limit`` distinct indexed names (``api.catalog_max_attribute_names``).

    Parameters
    ----------
    new : collection of str
        The item's indexed names (non-null, not excluded) the catalog does not hold yet.
    known : int
        Distinct indexed names the catalog holds.
    limit : int or None
        The limit; None: none.

    Raises
    ------
    CatalogSizeError
        Naming the first new attribute, the count it would reach and the limit with its setting.

    Examples
    --------
    >>> check_new_names(["a", "b"], 3, 4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    operators.catalog_rule.CatalogSizeError: attribute 'a' (and 1 more new name) would make 5 distinct attribute names in the catalog; at most 4 (api.catalog_max_attribute_names)
    """
    if limit is None or not new or known + len(new) <= limit:
        return
    first = min(new)
    more = len(new) - 1
    extra = f" (and {more:,} more new name{'s' * (more != 1)})" if more else ""
    raise CatalogSizeError(first, f"attribute {first!r}{extra} would make {known + len(new):,} distinct attribute "
                           f"names in the catalog", known + len(new), limit, "api.catalog_max_attribute_names")


def _utf8_bytes(s: str) -> int:
    """Bytes of ``s`` in UTF-8 (a lone surrogate, which JSON can carry, counted as its 3 bytes)."""
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


def _json_bytes(value: object) -> int:
    """Bytes of ``value`` as compact JSON (as ``fusionrec catalog`` publishes it)."""
    return len(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))


_MAX_GROWTH = 4
"""Compact JSON of a decoded record is at most ~3.8x the record: strings, whitespace and repeated keys never
grow, a number may (``1e15,``, 5 bytes, is written ``1000000000000000.0,``, 19)."""


def check_size(item: Mapping[str, Any], limits: CatalogLimits, record_bytes: int | None = None) -> None:
    """The size rule: every string value within ``limits.max_value_bytes``, at most ``limits.max_attributes``
    attributes besides ``item_id``, the whole record within ``limits.max_item_bytes``.

    Parameters
    ----------
    item : mapping
        One catalog item, as it is published (after coercion).
    limits : CatalogLimits
    record_bytes : int, optional
        The length of the record the item was decoded from, if the caller holds it (the catalog topic's value);
        None: unknown. The item is always measured as compact JSON of ``item`` (one measure on every path:
        indent or a ``deleted`` in the record do not count); the record's length stands in for it only when
        the compact encoding cannot be over ``max_item_bytes`` (``_MAX_GROWTH`` times it within the limit), so
        most items are not encoded again. A record within ``max_value_bytes`` cannot hold a longer string, so
        the values are then not looked at one by one.

    Raises
    ------
    CatalogSizeError
        Naming the attribute over its limit (for the whole record, its largest attribute), its size
        and the limit with its setting.

    Examples
    --------
    >>> check_size({"item_id": "a", "title": "x" * 20}, CatalogLimits(16, 8, 1024))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    operators.catalog_rule.CatalogSizeError: attribute 'title' is 20 bytes (UTF-8); at most 16 (api.catalog_max_value_bytes)
    """
    n = len(item) - ("item_id" in item)
    if n > limits.max_attributes:
        raise CatalogSizeError("", f"the item has {n:,} attributes besides item_id", n, limits.max_attributes,
                               "api.catalog_max_attributes")
    if record_bytes is None or record_bytes * _MAX_GROWTH > limits.max_item_bytes:
        record_bytes = _json_bytes(item)
    if record_bytes > limits.max_value_bytes:  # else no string in it can be longer
        for name, value in item.items():
            strings = value if isinstance(value, list | tuple) else (value,)
            for i, v in enumerate(strings):
                if isinstance(v, str) and len(v) * 4 > limits.max_value_bytes \
                        and (size := _utf8_bytes(v)) > limits.max_value_bytes:
                    where = f"attribute {name!r}" + (f" element {i}" if strings is value else "")
                    raise CatalogSizeError(name, f"{where} is {size:,} bytes (UTF-8)", size, limits.max_value_bytes,
                                           "api.catalog_max_value_bytes")
    if record_bytes > limits.max_item_bytes:
        largest = max(item, key=lambda k: _json_bytes(item[k]))
        raise CatalogSizeError(largest, f"the item is {record_bytes:,} bytes as JSON (its largest attribute, "
                               f"{largest!r}: {_json_bytes(item[largest]):,} bytes)", record_bytes, limits.max_item_bytes,
                               "api.catalog_max_item_bytes")


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


def serving_kinds(hidden_attribute: str | None = "hidden", in_stock_attribute: str | None = "in_stock",
                  stock_attribute: str | None = "stock") -> dict[str, str]:
    """The fixed types of the serving attributes (``KINDS``), whatever value comes first.

    The API serves no item with ``hidden == true``, ``in_stock == false`` or ``stock <= 0``; those
    rules see only a bool (a number for ``stock``), so the types are not left to the first value:
    ``"hidden": "true"`` first would make ``hidden`` a string attribute, the item served though the
    shop meant it hidden, and a later ``"hidden": true`` rejected. Both ``check_catalog`` (as
    ``declared``, by ``fusionrec catalog``) and the API's index (``CatalogIndex``) take these.

    Parameters
    ----------
    hidden_attribute, in_stock_attribute, stock_attribute : str or None
        The configured names (``api.hidden_attribute``, ``api.in_stock_attribute``,
        ``api.stock_attribute``); None: that rule is off and its attribute free.

    Returns
    -------
    dict attribute -> kind: ``"bool"`` for the first two, ``"number"`` for the stock attribute.

    Raises
    ------
    ValueError
        If one name is configured both as a bool and as the stock number.

    Examples
    --------
    >>> serving_kinds("hidden", "in_stock", None)
    {'hidden': 'bool', 'in_stock': 'bool'}
    """
    kinds: dict[str, str] = {}
    for name, kind in ((hidden_attribute, "bool"), (in_stock_attribute, "bool"), (stock_attribute, "number")):
        if name is None:
            continue
        if kinds.get(name, kind) != kind:
            raise ValueError(f"attribute {name!r} cannot be both a bool serving attribute (hidden_attribute, "
                             f"in_stock_attribute) and the stock number (stock_attribute)")
        kinds[name] = kind
    return kinds


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


def _json_kind(value: object) -> str:
    """How JSON names the kind of ``value`` ("a string", "null", "an array", ...), for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool | np.bool_):
        return "a bool"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple | np.ndarray):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def check_vector(attribute: str, value: object, dim: int | None = None) -> NDArray[np.float32]:
    """The vector rule: ``value`` as float32 if it is a flat array of ``dim`` finite numbers.

    Parameters
    ----------
    attribute : str
        The vector attribute's name (``api.vector_attribute``), for the message.
    value : object
        A JSON array (list) of ints and floats, or a 1-D real ndarray. Bools, strings, null,
        nested arrays and values that are not finite as float32 (NaN, inf, ``1e39``) do not fit.
    dim : int or None
        The length every vector must have (``api.vector_dim``); None: any non-zero length.

    Returns
    -------
    ndarray of shape (dim,), float32 (not normalised; an all-zero vector fits).

    Raises
    ------
    CatalogValueError
        If it does not fit; the message says why (``element 0 is an array``, ``3 numbers, not 4``).

    Examples
    --------
    >>> check_vector("vector", [1, 2.5]).tolist()
    [1.0, 2.5]
    >>> check_vector("vector", ["1", "2"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    operators.catalog_rule.CatalogValueError: attribute 'vector' must be a flat JSON array ... (element 0 is a string); ...
    """
    # fast path (the bulk load checks every item): one conversion and one reduction; NaN fails the
    # comparison, and anything it does not take goes to the checks below, which name the culprit
    if type(value) is list and value and (dim is None or len(value) == dim) and set(map(type, value)) <= _NUMBER_TYPES:
        try:
            x = np.array(value, dtype=np.float64)
        except OverflowError:  # an integer beyond float64: named below
            pass
        else:
            if np.abs(x).max() <= _FLOAT32_MAX:  # NaN fails the comparison; nothing overflows (no warning)
                return x.astype(np.float32)
    elif type(value) is np.ndarray and value.dtype == np.float32 and value.ndim == 1 and value.size \
            and (dim is None or value.size == dim):
        if math.isfinite(value.sum(dtype=np.float64)):  # float32 elements cannot overflow a float64 sum
            return value
    want = f"flat JSON array of {dim} finite numbers" if dim is not None else "flat JSON array of finite numbers"
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in "iuf":
            raise CatalogValueError(attribute, f"{want} (a {value.ndim}-d {value.dtype} array)", value)
        elements = value
    elif isinstance(value, list | tuple):
        elements = value
        if not set(map(type, value)) <= {int, float}:  # one pass in C; the loop below only names the culprit
            for i, x in enumerate(value):
                if not isinstance(x, numbers.Real) or isinstance(x, bool | np.bool_):
                    raise CatalogValueError(attribute, f"{want} (element {i} is {_json_kind(x)})", value)
    else:
        raise CatalogValueError(attribute, want, value)
    if len(elements) == 0 or dim is not None and len(elements) != dim:
        n = len(elements)
        raise CatalogValueError(attribute, f"{want} ({n} number{'s' * (n != 1)}{f', not {dim}' if dim else ''})", value)
    try:
        with np.errstate(over="ignore"):  # a float beyond float32 becomes inf, refused below
            v = np.asarray(elements, dtype=np.float32)
    except OverflowError:  # an integer beyond float64
        i = next(j for j, x in enumerate(elements) if isinstance(x, int) and abs(x) > _FLOAT32_MAX)
        raise CatalogValueError(attribute, f"{want} (element {i} is not a finite float32)", value) from None
    if not math.isfinite(v.sum(dtype=np.float64)):  # one reduction: NaN or inf in any element
        i = int(np.flatnonzero(~np.isfinite(v))[0])
        raise CatalogValueError(attribute, f"{want} (element {i} is not a finite float32)", value)
    return v


def check_item(item: Mapping[str, Any], *, vector_attribute: str | None = None,
               vector_dim: int | None = None) -> Mapping[str, Any] | None:
    """The rule's commands and payloads for one item: ``deleted`` and the vector attribute.

    Applied by ``check_catalog`` (``fusionrec catalog``) and, before its index, by the API
    (api/catalog.py), for records read from the topic whoever published them.

    Parameters
    ----------
    item : mapping
        One catalog item (its ``item_id`` is not checked here).
    vector_attribute : str or None
        The attribute that holds a vector (``api.vector_attribute``); None: no vector rule.
    vector_dim : int or None
        The length of every vector (``check_vector``'s ``dim``).

    Returns
    -------
    None if the item deletes itself (``"deleted": true``); else the item without ``deleted``
    (the same mapping when it has none).

    Raises
    ------
    CatalogValueError
        For a ``deleted`` that is neither a JSON bool nor null, or a vector ``check_vector`` refuses.
    """
    if DELETED in item:
        deleted = item[DELETED]
        if deleted is True:
            return None
        if deleted is not False and deleted is not None:
            raise CatalogValueError(DELETED, "JSON bool: use true to delete the item or false to keep it", deleted)
        item = {k: v for k, v in item.items() if k != DELETED}  # a command, not an attribute
    if vector_attribute is not None and item.get(vector_attribute) is not None:
        check_vector(vector_attribute, item[vector_attribute], vector_dim)
    return item


@dataclass
class CatalogCheck:
    """Outcome of ``check_catalog``: accepted items (coerced), deletes, rejections and coercion counts.

    ``kinds``, ``unindexed`` and ``coerced`` are the rule's state so far (a later
    ``check_catalog(..., start=check)`` continues from them); the lists hold one call's items.
    """

    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (position, item_id, reason)
    deleted: list[tuple[int, str]] = field(default_factory=list)  # (position, item_id): "deleted": true
    coerced: dict[str, int] = field(default_factory=dict)  # attribute -> values coerced
    kinds: dict[str, str] = field(default_factory=dict)
    unindexed: set[str] = field(default_factory=set)  # attributes whose first value has no kind
    names: set[str] = field(default_factory=set)  # indexed attributes accepted items hold (the index's columns)


def check_catalog(items: Iterable[Mapping[str, Any]], declared: Mapping[str, str] | None = None,
                  exclude: Iterable[str] = (), *, vector_attribute: str | None = None,
                  vector_dim: int | None = None, start: CatalogCheck | None = None,
                  limits: CatalogLimits | None = None) -> CatalogCheck:
    """Apply the rule to a batch of items, types fixed by the first value in the batch (or ``declared``).

    Parameters
    ----------
    items : iterable of mappings, each with an ``item_id``
    declared : mapping attribute -> kind, optional
    exclude : attributes not checked (modality payloads: vectors, image paths)
    vector_attribute : str, optional
        Checked by the vector rule (``check_vector``) and never typed; None: no vector rule.
    vector_dim : int, optional
        The vectors' length (``api.vector_dim``); None: any length.
    start : CatalogCheck, optional
        A previous call's outcome to continue from (a file checked in chunks): its types and
        coercion counts; ``declared`` is then ignored.
    limits : CatalogLimits, optional
        The size rule (``check_size``), applied to each item as it would be published (coerced);
        None: no size limit.

    Returns
    -------
    CatalogCheck; an item with an invalid id, a ``deleted`` that is not a JSON bool, a vector that
    does not fit, a value that does not fit or an item over a size limit is rejected whole; ``"deleted": true`` is listed in
    ``deleted``. Positions count this call's items from 0.
    """
    if start is None:
        out = CatalogCheck(kinds=dict(declared or {}))
    else:
        out = CatalogCheck(kinds=start.kinds, coerced=start.coerced, unindexed=start.unindexed, names=start.names)
    skip = set(exclude) | {"item_id"} | ({vector_attribute} if vector_attribute is not None else set())
    for pos, item in enumerate(items):
        try:
            item_id = canonical_id(item.get("item_id"))
        except BadId as exc:
            out.rejected.append((pos, str(item.get("item_id"))[:80], f"item_id: {exc}"))
            continue
        try:
            kept = check_item(item, vector_attribute=vector_attribute, vector_dim=vector_dim)
        except CatalogValueError as exc:
            out.rejected.append((pos, item_id, str(exc)))
            continue
        if kept is None:
            out.deleted.append((pos, item_id))
            continue
        item = kept
        fixed = {**item, "item_id": item_id}
        # the types, names and counts this item would register: kept only if it is accepted (a rejected line
        # fixes no type for later lines)
        kinds: dict[str, str] = {}
        unindexed: list[str] = []
        coerced: list[str] = []
        try:
            for name, value in item.items():
                if name in skip or name in out.unindexed or value is None:
                    continue
                kind = out.kinds.get(name) or kinds.get(name)
                if kind is None:
                    kind = infer_kind(value)
                    if kind is None:
                        unindexed.append(name)  # not indexable: kept in the item, left out of IQL
                        continue
                    kinds[name] = kind
                new = coerce_value(name, value, kind)
                if new is not value and new != value or type(new) is not type(value):
                    fixed[name] = new
                    coerced.append(name)
            if limits is not None:
                check_size(fixed, limits)
                new_names = [name for name, value in item.items() if value is not None and name not in skip
                             and name not in out.unindexed and name not in unindexed and name not in out.names]
                check_new_names(new_names, len(out.names), limits.max_attribute_names)
        except CatalogValueError as exc:
            out.rejected.append((pos, item_id, str(exc)))
            continue
        out.kinds.update(kinds)
        out.unindexed.update(unindexed)
        for name in coerced:
            out.coerced[name] = out.coerced.get(name, 0) + 1
        out.names.update(name for name, value in item.items() if value is not None and name not in skip
                         and name not in out.unindexed)
        out.accepted.append(fixed)
    return out
