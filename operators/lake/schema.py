"""Arrow schemas of the event lake and the conversion of Kafka messages to their rows.

``events`` rows are the event contract's fields (``operators/schema.py``) plus ``extra`` (the
unknown fields as one JSON object string, ``null`` when there are none) and the Kafka position
``kafka_partition`` / ``kafka_offset``. ``catalog`` rows are the change log of the compacted
catalog topic: ``item_id``, the record as JSON (``null`` = deleted), the Kafka message time.
Files are partitioned by ``date`` (UTC day of ``ts``), a hive directory ``date=YYYY-MM-DD``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import orjson
import pyarrow as pa

from operators.schema import Event

__all__ = ["EVENT_SCHEMA", "CATALOG_SCHEMA", "events_table", "catalog_table", "utc_date", "date_keys"]

_LINE = pa.struct([("item_id", pa.string()), ("quantity", pa.float64()), ("price", pa.float64())])

EVENT_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("ts", pa.float64()), ("type", pa.string()), ("user_id", pa.string()),
    ("session_id", pa.string()), ("item_id", pa.string()), ("items", pa.list_(_LINE)),
    ("quantity", pa.float64()), ("price", pa.float64()), ("store_id", pa.string()), ("query", pa.string()),
    ("lat", pa.float64()), ("lon", pa.float64()), ("campaign_id", pa.string()), ("arm", pa.string()),
    ("request_id", pa.string()), ("extra", pa.string()),
    ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64()),
])
"""One row per valid event; ``ts`` in epoch seconds (float64), ``extra`` a JSON object or null."""

CATALOG_SCHEMA = pa.schema([
    ("item_id", pa.string()), ("ts", pa.float64()), ("record", pa.string()),
    ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64()),
])
"""One row per catalog message: ``record`` is the item's JSON (null: deleted), ``ts`` the Kafka
message time in epoch seconds."""

_SCALARS = [f.name for f in EVENT_SCHEMA if f.name not in ("items", "extra", "kafka_partition", "kafka_offset")]


def utc_date(ts: float) -> str:
    """``YYYY-MM-DD`` of epoch seconds ``ts`` in UTC (the lake's partition key)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def date_keys(ts: Sequence[float] | np.ndarray) -> np.ndarray:
    """``utc_date`` of many epoch seconds at once: array of ``YYYY-MM-DD`` strings."""
    days = np.floor(np.asarray(ts, dtype=np.float64) / 86400.0).astype("datetime64[D]")
    return np.datetime_as_string(days, unit="D")


def events_table(rows: Sequence[tuple[int, int, Event]]) -> pa.Table:
    """``(partition, offset, Event)`` triples -> a table of :data:`EVENT_SCHEMA`."""
    cols: dict[str, list] = {name: [] for name in _SCALARS}
    items, extra, parts, offsets = [], [], [], []
    for part, off, e in rows:
        for name in _SCALARS:
            cols[name].append(getattr(e, name))
        items.append(None if e.items is None else
                     [{"item_id": b.item_id, "quantity": b.quantity, "price": b.price} for b in e.items])
        extra.append(None if not e.extra else orjson.dumps(e.extra).decode())
        parts.append(part)
        offsets.append(off)
    arrays = {name: pa.array(cols[name], EVENT_SCHEMA.field(name).type) for name in _SCALARS}
    arrays.update(items=pa.array(items, EVENT_SCHEMA.field("items").type), extra=pa.array(extra, pa.string()),
                  kafka_partition=pa.array(parts, pa.int32()), kafka_offset=pa.array(offsets, pa.int64()))
    return pa.table([arrays[f.name] for f in EVENT_SCHEMA], schema=EVENT_SCHEMA)


def catalog_table(rows: Sequence[tuple[int, int, float, bytes | None, bytes | None]]) -> pa.Table:
    """``(partition, offset, ts_s, key, value)`` of catalog messages -> a table of :data:`CATALOG_SCHEMA`.

    The item id is the message key (else the value's ``item_id``); a value that is not a JSON
    object is kept as a deletion only when it is empty (a tombstone) and dropped otherwise.
    """
    out: dict[str, list] = {f.name: [] for f in CATALOG_SCHEMA}
    for part, off, ts, key, value in rows:
        record: str | None = None
        item_id = key.decode(errors="replace") if key else None
        if value:
            try:
                obj = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            item_id = item_id or (str(obj["item_id"]) if obj.get("item_id") is not None else None)
            record = value.decode()
        if not item_id:
            continue
        for name, v in (("item_id", item_id), ("ts", ts), ("record", record), ("kafka_partition", part),
                        ("kafka_offset", off)):
            out[name].append(v)
    return pa.table({f.name: pa.array(out[f.name], f.type) for f in CATALOG_SCHEMA}, schema=CATALOG_SCHEMA)
