"""Reading the event lake: a time window of events as an ``InteractionLog``, the catalog as of a time.

Files come from the partitions' manifests (``operators/lake/store.py``), never from a directory
listing, so a half-written batch is never read. The window is a pyarrow dataset scan with
predicate pushdown: the ``date`` hive partition prunes whole files, the ``ts`` and ``type``
filters use the row groups' statistics, and only the columns training needs are read, one
record batch at a time (``lake.read_batch_rows``). Shop ids are dictionary-encoded per batch
and mapped to global dense indices through the batch's distinct values only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from numpy.typing import NDArray

from models.base import InteractionLog
from operators.lake.schema import date_keys
from operators.lake.store import lake_manifests

__all__ = ["lake_dataset", "lake_time_range", "read_catalog", "read_interactions", "parse_window", "LakeWindow"]

log = logging.getLogger(__name__)

_DATE = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
_COLUMNS = ["event_id", "ts", "type", "user_id", "session_id", "item_id", "items"]


def parse_window(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"`` or plain seconds -> seconds.

    Raises
    ------
    ValueError
        If the text is not a positive number with one of those units.
    """
    units = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    t = text.strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError as exc:
        raise ValueError(f"window: must be a number with unit d, h, m or s (e.g. '30d'); got {text!r}") from exc
    if not value > 0:
        raise ValueError(f"window: must be positive; got {text!r}")
    return value


def lake_dataset(lake_dir: Path, table: str = "events") -> ds.Dataset:
    """A pyarrow dataset of the files the manifests of ``table`` list, with the ``date`` partition column.

    Raises
    ------
    FileNotFoundError
        If ``table`` has no archived file under ``lake_dir``.
    """
    lake_dir = Path(lake_dir)
    files = [str(lake_dir / f.path) for m in lake_manifests(lake_dir, table) for f in m.files]
    if not files:
        raise FileNotFoundError(f"{lake_dir}: no archived {table} (is `fusionrec archive` running?)")
    return ds.dataset(files, format="parquet", partitioning=_DATE, partition_base_dir=str(lake_dir / table))


def lake_time_range(lake_dir: Path, table: str = "events") -> tuple[float, float] | None:
    """(oldest, newest) ``ts`` archived in ``table``, epoch seconds, from the manifests; None if empty."""
    files = [f for m in lake_manifests(lake_dir, table) for f in m.files]
    return (min(f.min_ts for f in files), max(f.max_ts for f in files)) if files else None


def _window_filter(start_ts: float, end_ts: float) -> ds.Expression:
    d0, d1 = (str(d) for d in date_keys([start_ts, end_ts]))
    return ((ds.field("date") >= d0) & (ds.field("date") <= d1)
            & (ds.field("ts") >= start_ts) & (ds.field("ts") < end_ts))


def read_catalog(lake_dir: Path, as_of_ts: float) -> dict[str, str]:
    """The catalog as it was at ``as_of_ts``: item id -> its newest record (JSON text) by then.

    Replays the archived change log of the catalog topic in offset order; a deletion (null
    record) removes the item. Returns an empty dict when no catalog was archived.
    """
    try:
        dset = lake_dataset(lake_dir, "catalog")
    except FileNotFoundError:
        return {}
    t = dset.to_table(columns=["item_id", "record", "kafka_offset"],
                      filter=ds.field("ts") <= as_of_ts).sort_by("kafka_offset")
    out: dict[str, str] = {}
    for item_id, record in zip(t.column("item_id").to_pylist(), t.column("record").to_pylist(), strict=True):
        if record is None:
            out.pop(item_id, None)
        else:
            out[item_id] = record
    return out


class _Codes:
    """Global dense codes of strings, numbered in order of first appearance."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def encode(self, values: pa.Array | pa.ChunkedArray) -> NDArray[np.int32]:
        enc = pc.dictionary_encode(values)
        if isinstance(enc, pa.ChunkedArray):
            enc = enc.combine_chunks() if enc.num_chunks != 1 else enc.chunk(0)
        idx = self.index
        mapping = np.fromiter((idx.setdefault(v, len(idx)) for v in enc.dictionary.to_pylist()), np.int32,
                              len(enc.dictionary))
        return mapping[enc.indices.to_numpy(zero_copy_only=False)]

    def ids(self) -> tuple[str, ...]:
        return tuple(self.index)


@dataclass(frozen=True)
class LakeWindow:
    """A window read from the lake: the training log and what it was read from."""

    log: InteractionLog
    start_ts: float
    end_ts: float
    n_rows: int
    """Lake rows (events) in the window of the weighted types, before baskets are expanded (a
    repeated ``event_id`` counted once)."""
    n_users: int


def read_interactions(lake_dir: Path, start_ts: float, end_ts: float, event_types: Sequence[str], *,
                      batch_rows: int = 262_144) -> LakeWindow:
    """Events of ``event_types`` with ``start_ts <= ts < end_ts`` as an ``InteractionLog``, read in batches.

    One row per (event, item): ``item_id`` and every basket line; sessions are ``session_id``,
    else ``user_id`` (as ``operators.training.events_to_log``). ``event_type`` codes index
    ``event_types``; ``item_ids`` are in order of first appearance. An event whose ``event_id`` an
    earlier row of the window had (a producer's retry that the archive kept, as it keeps every
    record) is skipped: the first copy counts once, as in ``operators.training.read_events_jsonl``.
    Ids are compared by a 64-bit hash (two distinct ids of one window collide with odds near
    ``n² / 2⁶⁵``: about 3e-6 for 10 M events), so memory stays at 8 bytes per event.

    Raises
    ------
    FileNotFoundError
        If no event was archived under ``lake_dir``.
    """
    dset = lake_dataset(lake_dir, "events")
    types = pa.array(list(event_types), pa.string())
    flt = _window_filter(start_ts, end_ts) & ds.field("type").isin(types)
    items, sessions, users = _Codes(), _Codes(), _Codes()
    parts: dict[str, list[np.ndarray]] = {"s": [], "i": [], "t": [], "e": [], "v": []}
    id_hashes: list[NDArray[np.int64]] = []  # per event of the window, in reading order
    n_rows = 0
    for batch in dset.to_batches(columns=_COLUMNS, filter=flt, batch_size=batch_rows, batch_readahead=1,
                                 fragment_readahead=1):  # bounded memory: one batch in flight
        if batch.num_rows == 0:
            continue
        first_event = n_rows
        n_rows += batch.num_rows
        id_hashes.append(_id_hashes(batch.column("event_id")))
        users.encode(batch.column("user_id"))
        sess = sessions.encode(pc.coalesce(batch.column("session_id"), batch.column("user_id")))
        ts = batch.column("ts").to_numpy(zero_copy_only=False)
        etype = pc.index_in(batch.column("type"), value_set=types).to_numpy(zero_copy_only=False).astype(np.int8)
        single = pc.is_valid(batch.column("item_id"))
        rows = np.flatnonzero(single.to_numpy(zero_copy_only=False))
        if len(rows):
            parts["i"].append(items.encode(batch.column("item_id").filter(single)))
            parts["s"].append(sess[rows])
            parts["t"].append(ts[rows])
            parts["e"].append(etype[rows])
            parts["v"].append(first_event + rows)
        basket = batch.column("items")
        if basket.null_count < len(basket):
            parent = pc.list_parent_indices(basket).to_numpy(zero_copy_only=False)
            if len(parent):
                parts["i"].append(items.encode(pc.struct_field(pc.list_flatten(basket), "item_id")))
                parts["s"].append(sess[parent])
                parts["t"].append(ts[parent])
                parts["e"].append(etype[parent])
                parts["v"].append(first_event + parent)

    def cat(key: str, dtype: type) -> np.ndarray:
        return np.concatenate(parts[key]).astype(dtype, copy=False) if parts[key] else np.zeros(0, dtype)

    first_copy = np.zeros(n_rows, bool)
    if n_rows:
        first_copy[np.unique(np.concatenate(id_hashes), return_index=True)[1]] = True
    repeated = n_rows - int(first_copy.sum())
    if repeated:
        log.warning("lake window [%.0f, %.0f): skipped %d events whose event_id an earlier one had "
                    "(the first copy counts)", start_ts, end_ts, repeated)
    keep = first_copy[cat("v", np.int64)]
    s_arr, t_arr = cat("s", np.int32)[keep], cat("t", np.float64)[keep]
    order = np.lexsort((t_arr, s_arr))
    il = InteractionLog(session_idx=s_arr[order], item_idx=cat("i", np.int32)[keep][order], ts=t_arr[order],
                        n_items=len(items.index), event_type=cat("e", np.int8)[keep][order],
                        event_types=tuple(event_types), item_ids=items.ids())
    log.info("lake window [%.0f, %.0f): %d events, %d interactions, %d items, %d sessions", start_ts, end_ts,
             n_rows, il.n_events, il.n_items, len(sessions.index))
    return LakeWindow(il, start_ts, end_ts, n_rows - repeated, len(users.index))


def _id_hashes(ids: pa.Array | pa.ChunkedArray) -> NDArray[np.int64]:
    """64-bit hashes of a batch's event ids (each distinct id hashed once, in Python: a null id
    hashes as None, so null ids count as one)."""
    enc = pc.dictionary_encode(ids)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks() if enc.num_chunks != 1 else enc.chunk(0)
    per_id = np.fromiter(map(hash, enc.dictionary.to_pylist()), np.int64, len(enc.dictionary))
    idx = enc.indices
    if idx.null_count:
        idx = pc.fill_null(idx, len(per_id))
        per_id = np.append(per_id, np.int64(hash(None)))
    return per_id[idx.to_numpy(zero_copy_only=False)]

