"""The catalogue index IQL runs on: dense item_idx, per-attribute bitmaps and range columns, live set."""

from __future__ import annotations

from array import array
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pyroaring import BitMap

from api.iql.columns import CategoricalColumn, ListColumn
from api.iql.errors import CatalogSchemaError, CatalogWidthError
from api.iql.numeric import NumericColumn
from api.iql.schema import NUMERIC_TYPES, AttrType, Schema, _infer
from operators.catalog_rule import CatalogSizeError, check_new_names, serving_kinds
from operators.id_index import IdIndex
from operators.ids import BadId, canonical_id

__all__ = ["BUILD_CHUNK_ITEMS", "CatalogIndex", "Column", "ItemAttributes"]

Column = CategoricalColumn | ListColumn | NumericColumn
BUILD_CHUNK_ITEMS = 20_000
"""Items ``CatalogIndex.build`` normalises together (~30 MB of decoded catalog items at a time)."""


def _item_id(item: Mapping[str, Any]) -> str:
    """The canonical string id of an item (the rule of ``operators.ids``: ``12345.0`` -> ``"12345"``)."""
    value = item.get("item_id")
    try:
        return canonical_id(value)
    except BadId as exc:
        raise CatalogSchemaError(str(value)[:80], "item_id", f"a non-empty string id ({exc.reason})", value) from None


class CatalogIndex:
    """Bitmap index over the item catalogue; upserts and deletes are visible to the next query.

    ``item_idx`` is dense and assigned on first sight of an ``item_id`` (kept across delete and
    re-insert). Per attribute: a value -> BitMap column (strings, bools, lists of strings) or a
    sorted range column (numbers, timestamps), each with a ``present`` bitmap; ``null`` of an
    attribute is ``live - present``. ``live`` holds items that exist and may be served: not hidden,
    not ``in_stock == false``, not ``stock <= 0``.

    Parameters
    ----------
    declared : mapping of str to AttrType or str, optional
        Attribute types fixed up front; others are inferred from the first non-null value.
    hidden_attribute : str or None
        A bool attribute that, when true, removes the item from ``live`` (default ``"hidden"``).
    in_stock_attribute : str or None
        A bool attribute that, when false, removes the item from ``live`` (default None: no such
        rule; the API passes ``api.in_stock_attribute``, ``"in_stock"``).
    stock_attribute : str or None
        A number attribute that, when ``<= 0``, removes the item from ``live`` (default None; the
        API passes ``api.stock_attribute``, ``"stock"``).
        These three have fixed types whatever value comes first (``operators.catalog_rule.serving_kinds``:
        bool, bool, number): ``"hidden": "true"`` is coerced to ``true``, ``"stock": "0"`` to ``0``, and a
        value no coercion fits (``"hidden": "maybe"``) rejects the item.
    exclude : iterable of str
        Attributes not indexed (modality payloads: title text, image path, vectors).
    skip_unsupported : bool
        Ignore (and list in ``schema.skipped``) attributes whose first value cannot be indexed
        (dicts, lists of numbers) instead of raising; type conflicts still raise.
    bucket, max_delta : int, optional
        Tuning of numeric columns, see ``api.iql.numeric.NumericColumn``.
    max_attribute_names : int or None
        Columns (distinct indexed attribute names) the index holds at most (``api.catalog_max_attribute_names``):
        an item that would add a name beyond it is rejected (``CatalogWidthError``); None: no limit.

    Each item's attribute names (a superset of the columns it holds, shared by items with the same keys) are
    kept, so an upsert or delete touches the columns the item had and has, whatever the catalog's width.

    Examples
    --------
    >>> index = CatalogIndex.build([{"item_id": "a", "brand": "Acme", "price": 10}])
    >>> index.upsert({"item_id": "b", "brand": "Bolt", "price": 20})  # returns the item_idx
    1
    >>> sorted(index.column("price").range(15, None))
    [1]
    """

    def __init__(
        self,
        *,
        declared: Mapping[str, AttrType | str] | None = None,
        hidden_attribute: str | None = "hidden",
        in_stock_attribute: str | None = None,
        stock_attribute: str | None = None,
        exclude: Iterable[str] = (),
        skip_unsupported: bool = False,
        bucket: int | None = None,
        max_delta: int | None = None,
        max_attribute_names: int | None = None,
    ) -> None:
        # the serving attributes' types do not depend on the first value (operators/catalog_rule.py)
        self.schema = Schema(declared, skip_unsupported,
                             fixed=serving_kinds(hidden_attribute, in_stock_attribute, stock_attribute))
        self.hidden_attribute = hidden_attribute
        self.in_stock_attribute = in_stock_attribute
        self.stock_attribute = stock_attribute
        self.exclude = frozenset(exclude) | {"item_id"}
        self._bucket, self._max_delta = bucket, max_delta
        self._ids: list[str] = []
        self._idx_of = IdIndex(self._ids)  # item_id -> item_idx in flat arrays (a dict cost ~59 B per item more)
        self._columns: dict[str, Column] = {}
        self.max_attribute_names = max_attribute_names
        # per item_idx, the id of its names (a superset of the columns it holds; 0: none), so an upsert touches
        # only its own columns (nulling every column an item lacks cost O(catalog width) per upsert)
        self._shape_of = array("i")
        self._shapes: list[tuple[str, ...]] = [()]
        self._shape_ids: dict[tuple[str, ...], int] = {(): 0}
        self.live = BitMap()
        self.existing = BitMap()

    # ---- building ------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        items: Iterable[Mapping[str, Any]],
        *,
        on_reject: Callable[[Mapping[str, Any], CatalogSchemaError], None] | None = None,
        chunk_items: int = BUILD_CHUNK_ITEMS,
        **options: Any,
    ) -> CatalogIndex:
        """Bulk-build from item dicts, ``chunk_items`` at a time; later duplicates are upserted.

        Each chunk's values are normalised per column and kept as codes and float arrays, so the
        items need not all be held: ``items`` may be a generator decoding them as it goes. Columns
        are indexed once, after the last chunk. Answers equal those of upserting the items in order.

        Parameters
        ----------
        items : iterable of mappings
            ``item_id`` plus attributes, as for ``upsert``.
        on_reject : callable (item, CatalogSchemaError), optional
            Called for an item that does not fit the schema (missing ``item_id``, a value that
            conflicts with its attribute's type); the item is left out, as a failed ``upsert``
            leaves it. Without it such an item raises.
        chunk_items : int
            Items normalised together (bounds the memory of the build beyond the index itself).
        **options
            ``CatalogIndex`` constructor arguments.

        Raises
        ------
        CatalogSchemaError
            Without ``on_reject``: on a missing ``item_id`` or an attribute value that conflicts
            with its type.
        """
        index = cls(**options)
        duplicates: list[Mapping[str, Any]] = []
        chunk: list[Mapping[str, Any]] = []
        for item in items:
            chunk.append(item)
            if len(chunk) >= chunk_items:
                index._append_chunk(chunk, duplicates, on_reject)
                chunk = []
        index._append_chunk(chunk, duplicates, on_reject)
        for column in index._columns.values():
            column.finish_bulk()
        index.existing = BitMap(range(len(index._ids)))
        index.live = index.existing - index._unavailable()
        for item in duplicates:
            try:
                index.upsert(item)
            except CatalogSchemaError as exc:
                if on_reject is None:
                    raise
                on_reject(item, exc)
        return index

    def _append_chunk(
        self,
        chunk: Sequence[Mapping[str, Any]],
        duplicates: list[Mapping[str, Any]],
        on_reject: Callable[[Mapping[str, Any], CatalogSchemaError], None] | None,
    ) -> None:
        """``build``'s step: give the chunk's new items an item_idx and append their values to the columns."""
        fresh: list[tuple[str, Mapping[str, Any]]] = []
        seen: set[str] = set()
        named: list[tuple[str, Mapping[str, Any]]] = []
        for item in chunk:
            try:
                named.append((_item_id(item), item))
            except CatalogSchemaError as exc:
                if on_reject is None:
                    raise
                on_reject(item, exc)
        known = self._idx_of.lookup([item_id for item_id, _ in named]).tolist()  # one batch per chunk
        for (item_id, item), idx in zip(named, known, strict=True):
            if idx >= 0 or item_id in seen:
                duplicates.append(item)
            else:
                seen.add(item_id)
                fresh.append((item_id, item))
        if self.max_attribute_names is not None:
            fresh = self._within_width(fresh, on_reject)
        try:
            normalized = self._normalize_chunk(fresh)
        except CatalogSchemaError:
            if on_reject is None:
                raise
            fresh = [(i, item) for i, item in fresh if self._fits(i, item, on_reject)]
            normalized = self._normalize_chunk(fresh)
        first = len(self._ids)
        self._idx_of.extend([item_id for item_id, _ in fresh])
        self._pad_shapes(first)
        self._shape_of.extend([self._shape_id(tuple(item)) for _, item in fresh])
        for name, (pos, values) in normalized.items():
            column = self._columns.get(name)
            if column is None:
                column = self._columns[name] = self._new_column(self.schema[name])
            column.append_bulk(pos + first, values)

    def _normalize_chunk(
        self, fresh: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> dict[str, tuple[NDArray[np.int64], list[Any]]]:
        """Per attribute: positions in ``fresh`` (int64) and normalised non-null values. Raises
        CatalogSchemaError (changing nothing but inferred types) if a value does not fit."""
        raw: dict[str, tuple[list[int], list[Any]]] = {}
        for pos, (_, item) in enumerate(fresh):
            for name, value in item.items():
                if value is not None and name not in self.exclude:
                    column = raw.get(name)
                    if column is None:
                        column = raw[name] = ([], [])
                    column[0].append(pos)
                    column[1].append(value)
        out: dict[str, tuple[NDArray[np.int64], list[Any]]] = {}
        for name, (rows, values) in raw.items():
            normalized = self.schema.normalize_many([fresh[r][0] for r in rows], name, values)
            if name in self.schema.skipped:
                continue
            keep = [i for i, v in enumerate(normalized) if v is not None]
            if len(keep) == len(normalized):
                out[name] = (np.asarray(rows, dtype=np.int64), normalized)
            else:
                out[name] = (np.asarray(rows, dtype=np.int64)[keep], [normalized[i] for i in keep])
        return out

    def _within_width(self, fresh: list[tuple[str, Mapping[str, Any]]],
                      on_reject: Callable[[Mapping[str, Any], CatalogSchemaError], None] | None
                      ) -> list[tuple[str, Mapping[str, Any]]]:
        """``build``'s width rule: ``fresh`` without the items that would add names beyond ``max_attribute_names``
        (in order, as ``upsert`` applies it; ``on_reject`` for each, or raise)."""
        names = set(self._columns)
        kept: list[tuple[str, Mapping[str, Any]]] = []
        for item_id, item in fresh:
            try:
                new = self._check_width(item_id, item, names)
            except CatalogWidthError as exc:
                if on_reject is None:
                    raise
                on_reject(item, exc)
                continue
            names.update(new)
            kept.append((item_id, item))
        return kept

    def _check_width(self, item_id: str, item: Mapping[str, Any], known: Collection[str]) -> list[str]:
        """The item's indexed names not in ``known``; raises ``CatalogWidthError`` if they would make more than
        ``max_attribute_names`` (``operators.catalog_rule.check_new_names``)."""
        schema = self.schema
        new = [name for name, value in item.items()
               if value is not None and name not in known and name not in self.exclude and name not in schema.skipped
               and not (schema.skip_unsupported and name not in schema and _infer(value) is None)]
        try:
            check_new_names(new, len(known), self.max_attribute_names)
        except CatalogSizeError as exc:
            raise CatalogWidthError(item_id, exc.attribute, str(exc)) from None
        return new

    def _pad_shapes(self, n: int) -> None:
        """Give item_idx below ``n`` a names entry (0: none; item_idx reserved by ``withdraw`` have none)."""
        if len(self._shape_of) < n:
            self._shape_of.extend([0] * (n - len(self._shape_of)))

    def _shape_id(self, names: tuple[str, ...]) -> int:
        """The id of a tuple of names (interned: items with the same keys share one)."""
        shape = self._shape_ids.get(names)
        if shape is None:
            shape = self._shape_ids[names] = len(self._shapes)
            self._shapes.append(names)
        return shape

    def _names_of(self, idx: int) -> tuple[str, ...]:
        """The names item ``idx`` may hold a column value for (a superset of its columns)."""
        return self._shapes[self._shape_of[idx]] if idx < len(self._shape_of) else ()

    def _fits(self, item_id: str, item: Mapping[str, Any],
              on_reject: Callable[[Mapping[str, Any], CatalogSchemaError], None]) -> bool:
        """True if every attribute of ``item`` fits the schema (``upsert``'s check); else ``on_reject``."""
        try:
            for name, value in item.items():
                if name not in self.exclude:
                    self.schema.normalize(item_id, name, value)
        except CatalogSchemaError as exc:
            on_reject(item, exc)
            return False
        return True

    def _new_column(self, kind: AttrType) -> Column:
        if kind in NUMERIC_TYPES:
            return NumericColumn(self._bucket, self._max_delta)
        return ListColumn() if kind is AttrType.STRING_LIST else CategoricalColumn()

    # ---- writes --------------------------------------------------------------------------------

    def upsert(self, item: Mapping[str, Any], *, partial: bool = False) -> int:
        """Insert or replace an item; returns its item_idx.

        Parameters
        ----------
        item : mapping
            ``item_id`` plus attributes. A None value nulls the attribute.
        partial : bool
            If true, only the given attributes change (a patch: price, stock, hidden);
            otherwise attributes missing from ``item`` become null.

        Raises
        ------
        CatalogSchemaError
            Before any change, if an attribute value conflicts with the attribute's type.
        """
        item_id = _item_id(item)
        if self.max_attribute_names is not None:
            self._check_width(item_id, item, self._columns.keys())
        values = {
            name: self.schema.normalize(item_id, name, value)
            for name, value in item.items()
            if name not in self.exclude
        }
        idx = self._idx_of.add(item_id)
        old = self._names_of(idx)
        if not partial:
            for name in old:  # the columns the item held (not every column of the catalog: O(its width))
                if name not in values and name not in self.exclude:
                    values[name] = None
            names = tuple(name for name, value in values.items() if value is not None)
        else:
            names = tuple(name for name in dict.fromkeys((*old, *values))
                          if values.get(name, True) is not None and name not in self.exclude)
        for name, value in values.items():
            column = self._columns.get(name)
            if column is None:
                if value is None:
                    continue
                column = self._columns[name] = self._new_column(self.schema[name])
            elif value is None and idx not in column.present:
                continue
            column.set(idx, value)
        self._pad_shapes(idx + 1)
        self._shape_of[idx] = self._shape_id(names)
        self.existing.add(idx)
        if self._is_hidden(idx):
            self.live.discard(idx)
        else:
            self.live.add(idx)
        return idx

    def delete(self, item_id: str) -> bool:
        """Remove an item from every index (its item_idx stays reserved). False if unknown."""
        idx = self._idx_of.get(str(item_id))
        if idx is None or idx not in self.existing:
            return False
        for name in self._names_of(idx):
            column = self._columns.get(name)
            if column is not None and idx in column.present:
                column.set(idx, None)
        if idx < len(self._shape_of):
            self._shape_of[idx] = 0
        self.existing.discard(idx)
        self.live.discard(idx)
        return True

    def withdraw(self, item_id: str) -> None:
        """Make an item known but never live (a catalog message the schema rule rejected): deleted
        if indexed, else its item_idx is reserved, so candidate look-ups see it and drop it."""
        if not self.delete(item_id):
            self._idx_of.add(item_id)  # reserved (known already: unchanged)

    def _is_hidden(self, idx: int) -> bool:
        """True if the item is hidden, marked out of stock or has a stock ``<= 0`` (not servable)."""
        hidden = self._columns.get(self.hidden_attribute or "")
        if isinstance(hidden, CategoricalColumn) and hidden.value_at(idx) is True:
            return True
        in_stock = self._columns.get(self.in_stock_attribute or "")
        if isinstance(in_stock, CategoricalColumn) and in_stock.value_at(idx) is False:
            return True
        stock = self._columns.get(self.stock_attribute or "")
        if isinstance(stock, NumericColumn):
            value = stock.value_at(idx)
            return value is not None and value <= 0
        return False

    def _unavailable(self) -> BitMap:
        """Items hidden, out of stock (``in_stock == false``) or with ``stock <= 0`` (bulk form of ``_is_hidden``)."""
        out = BitMap()
        hidden = self._columns.get(self.hidden_attribute or "")
        if isinstance(hidden, CategoricalColumn):
            out |= hidden.eq(True)
        in_stock = self._columns.get(self.in_stock_attribute or "")
        if isinstance(in_stock, CategoricalColumn):
            out |= in_stock.eq(False)
        stock = self._columns.get(self.stock_attribute or "")
        if isinstance(stock, NumericColumn):
            out |= stock.range(None, 0.0)
        return out

    # ---- reads ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of live items."""
        return len(self.live)

    @property
    def capacity(self) -> int:
        """Number of item_idx ever assigned (array length for per-item outputs)."""
        return len(self._ids)

    def column(self, name: str) -> Column | None:
        """The column of an attribute, or None if no item ever had it."""
        return self._columns.get(name)

    def item_idx(self, item_id: str) -> int | None:
        """item_id -> item_idx, or None for an unknown id."""
        return self._idx_of.get(item_id)

    def lookup(self, item_ids: Sequence[str]) -> NDArray[np.int64]:
        """item_ids -> item_idx array; -1 for unknown ids."""
        return self._idx_of.lookup(item_ids)

    def intern_ids(self, item_ids: list[str]) -> int:
        """Replace, in place, each id of ``item_ids`` this index knows by the equal string it holds (one object
        for both: a model version's 1M ids cost ~56 MB of their own); unknown ids are left. Returns how many
        were replaced. One slice assignment: a reader on another thread sees the old list or the new one."""
        ids, pos = self._ids, self._idx_of.lookup(item_ids)
        item_ids[:] = [s if p < 0 else ids[p] for s, p in zip(item_ids, pos.tolist(), strict=True)]
        return int((pos >= 0).sum())

    def item_ids(self, idx: Iterable[int]) -> list[str]:
        """item_idx -> item_id strings."""
        return [self._ids[i] for i in idx]

    def attributes(self, item_id: str) -> ItemAttributes | None:
        """``get(item_id)`` as a mapping that reads each attribute from its column when it is first asked for (a
        request's ``context.item`` is read for the one or two attributes its filter names, not all of them)."""
        idx = self._idx_of.get(item_id)
        if idx is None or idx not in self.existing:
            return None
        return ItemAttributes(self._columns, idx, item_id)

    def get(self, item_id: str) -> dict[str, Any] | None:
        """The indexed attributes of a live-or-hidden item (timestamps as epoch seconds), or None."""
        idx = self._idx_of.get(item_id)
        if idx is None or idx not in self.existing:
            return None
        item: dict[str, Any] = {"item_id": item_id}
        for name, column in self._columns.items():
            value = column.value_at(idx)
            if value is not None:
                item[name] = list(value) if isinstance(value, tuple) else value
        return item


class ItemAttributes(Mapping[str, Any]):
    """The indexed attributes of one item (``CatalogIndex.get``'s mapping: the same keys and values), each read from
    its column (and kept) on first access. Valid while the index is unchanged (``CatalogView`` drops them when the
    catalog changes); read it, never change it."""

    __slots__ = ("_columns", "_idx", "_item_id", "_read")

    def __init__(self, columns: Mapping[str, Any], idx: int, item_id: str) -> None:
        self._columns, self._idx, self._item_id = columns, idx, item_id
        self._read: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:  # noqa: ANN401 - an attribute's value, as CatalogIndex.get gives it
        try:
            return self._read[name]
        except KeyError:
            pass
        column = self._columns.get(name)
        value = None if column is None else column.value_at(self._idx)
        if value is None:
            if name == "item_id":
                return self._item_id
            raise KeyError(name)
        value = self._read[name] = list(value) if isinstance(value, tuple) else value
        return value

    def _whole(self) -> dict[str, Any]:
        item: dict[str, Any] = {"item_id": self._item_id}
        for name in self._columns:
            value = self.get(name)
            if value is not None:
                item[name] = value
        return item

    def __iter__(self) -> Iterator[str]:
        return iter(self._whole())

    def __len__(self) -> int:
        return len(self._whole())

    def __repr__(self) -> str:
        return f"ItemAttributes({self._whole()!r})"
