"""The catalogue index IQL runs on: dense item_idx, per-attribute bitmaps and range columns, live set."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pyroaring import BitMap

from api.iql.columns import CategoricalColumn, ListColumn
from api.iql.errors import CatalogSchemaError
from api.iql.numeric import NumericColumn
from api.iql.schema import NUMERIC_TYPES, AttrType, Schema
from operators.ids import BadId, canonical_id

__all__ = ["CatalogIndex", "Column"]

Column = CategoricalColumn | ListColumn | NumericColumn


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
    exclude : iterable of str
        Attributes not indexed (modality payloads: title text, image path, vectors).
    skip_unsupported : bool
        Ignore (and list in ``schema.skipped``) attributes whose first value cannot be indexed
        (dicts, lists of numbers) instead of raising; type conflicts still raise.
    bucket, max_delta : int, optional
        Tuning of numeric columns, see ``api.iql.numeric.NumericColumn``.

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
    ) -> None:
        self.schema = Schema(declared, skip_unsupported)
        self.hidden_attribute = hidden_attribute
        self.in_stock_attribute = in_stock_attribute
        self.stock_attribute = stock_attribute
        self.exclude = frozenset(exclude) | {"item_id"}
        self._bucket, self._max_delta = bucket, max_delta
        self._ids: list[str] = []
        self._idx_of: dict[str, int] = {}
        self._columns: dict[str, Column] = {}
        self.live = BitMap()
        self.existing = BitMap()

    # ---- building ------------------------------------------------------------------------------

    @classmethod
    def build(cls, items: Iterable[Mapping[str, Any]], **options: Any) -> CatalogIndex:
        """Bulk-build from item dicts (columns loaded with vectorised grouping; later duplicates upserted).

        Raises
        ------
        CatalogSchemaError
            On a missing ``item_id`` or an attribute value that conflicts with its type.
        """
        index = cls(**options)
        raw: dict[str, tuple[list[int], list[Any]]] = {}
        duplicates = []
        for item in items:
            item_id = _item_id(item)
            if item_id in index._idx_of:
                duplicates.append(item)
                continue
            idx = index._idx_of[item_id] = len(index._ids)
            index._ids.append(item_id)
            for name, value in item.items():
                if value is not None and name not in index.exclude:
                    column = raw.get(name)
                    if column is None:
                        column = raw[name] = ([], [])
                    column[0].append(idx)
                    column[1].append(value)
        for name, (rows, values) in raw.items():
            normalized = index.schema.normalize_many([index._ids[r] for r in rows], name, values)
            if name in index.schema.skipped:
                continue
            keep = [i for i, v in enumerate(normalized) if v is not None]
            column = index._new_column(index.schema[name])
            column.bulk_load(np.asarray(rows, dtype=np.int64)[keep], [normalized[i] for i in keep])
            index._columns[name] = column
        index.existing = BitMap(range(len(index._ids)))
        index.live = index.existing - index._unavailable()
        for item in duplicates:
            index.upsert(item)
        return index

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
        values = {
            name: self.schema.normalize(item_id, name, value)
            for name, value in item.items()
            if name not in self.exclude
        }
        idx = self._idx_of.get(item_id)
        if idx is None:
            idx = self._idx_of[item_id] = len(self._ids)
            self._ids.append(item_id)
        if not partial:
            for name in self._columns.keys() - values.keys():
                values[name] = None
        for name, value in values.items():
            column = self._columns.get(name)
            if column is None:
                if value is None:
                    continue
                column = self._columns[name] = self._new_column(self.schema[name])
            column.set(idx, value)
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
        for column in self._columns.values():
            if idx in column.present:
                column.set(idx, None)
        self.existing.discard(idx)
        self.live.discard(idx)
        return True

    def withdraw(self, item_id: str) -> None:
        """Make an item known but never live (a catalog message the schema rule rejected): deleted
        if indexed, else its item_idx is reserved, so candidate look-ups see it and drop it."""
        if not self.delete(item_id) and item_id not in self._idx_of:
            self._idx_of[item_id] = len(self._ids)
            self._ids.append(item_id)

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
        get = self._idx_of.get
        return np.fromiter((get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))

    def item_ids(self, idx: Iterable[int]) -> list[str]:
        """item_idx -> item_id strings."""
        return [self._ids[i] for i in idx]

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
