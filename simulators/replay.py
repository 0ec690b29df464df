"""Readers that turn real logs into ``Event``s in time order: session-rec TSV, SR-GNN pickles, UCI Online Retail.

| format          | input                                              | event                               | user_id        |
|-----------------|----------------------------------------------------|-------------------------------------|----------------|
| ``sessionrec``  | TSV with header ``SessionId ItemId Time`` (+ any)  | ``view`` per row                    | ``UserId`` if present, else the session |
| ``srgnn``       | pickle: ``list[list[item]]`` or ``(prefixes, next)``; an item is ``int`` or ``(int, unix_s)`` | ``view`` per click | the session |
| ``online_retail`` | parquet or csv (``InvoiceNo StockCode Description Quantity InvoiceDate UnitPrice CustomerID Country``), cleaned by ``operators.retail_cleaning`` | one ``pos_purchase`` per invoice with its ``items`` | ``CustomerID`` (``guest-<invoice>`` if missing) |

Ids are kept as the text in the file (read as strings) or formatted from integers, never from
floats. ``ts`` is epoch seconds: session-rec ``Time`` is checked to be seconds (milliseconds are
detected and rejected with a reason); untimed SR-GNN sessions get synthetic times, one click every
``gap_s`` seconds from ``start_ts``; ``InvoiceDate`` (no zone in the file) is read as UTC.

SR-GNN files are pickles; they are read with an unpickler that refuses every global, so only
plain lists, tuples and numbers load (a pickle cannot run code through it).
"""

from __future__ import annotations

import io
import logging
import math
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from operators.ids import BadId, canonical_id
from operators.retail_cleaning import CleaningReport, RetailCleaning, clean_retail, read_retail_table
from operators.schema import BasketLine, Event

__all__ = [
    "REPLAY_FORMATS",
    "resolve_log_path",
    "ReplayFormatError",
    "read_sessionrec",
    "read_srgnn",
    "read_online_retail",
    "online_retail_catalog",
    "read_replay",
    "replay_catalog",
]

log = logging.getLogger(__name__)

REPLAY_FORMATS: tuple[str, ...] = ("sessionrec", "srgnn", "online_retail")
_MS_THRESHOLD = 1e11  # epoch seconds stay below this until the year 5138


class ReplayFormatError(ValueError):
    """A log file does not have the shape its format promises; the message names the file and what is wrong."""


def _canonical_ids(path: Path, column: str, values: list[Any]) -> list[str]:
    """A column of ids in canonical form (``operators.ids``), each distinct value checked once.

    Raises
    ------
    ReplayFormatError
        Naming the file, column, row and the rule broken.
    """
    canon: dict[Any, str] = {}
    out = []
    for row, v in enumerate(values):
        c = canon.get(v)
        if c is None:
            try:
                c = canon[v] = canonical_id(v)
            except BadId as exc:
                raise ReplayFormatError(f"{path}: {column} of row {row + 1}: {exc}") from exc
        out.append(c)
    return out


# ---------------------------------------------------------------------- session-rec TSV
def read_sessionrec(
    path: str | Path, *, limit: int | None = None, event_type: str = "view", source: str | None = None
) -> Iterator[Event]:
    """Yield one event per row of a session-rec TSV, in time order (ties keep file order).

    Parameters
    ----------
    path : str or Path
        TSV with a header holding at least ``SessionId``, ``ItemId`` and ``Time`` (unix seconds).
    limit : int, optional
        Stop after this many events (the earliest ones).
    event_type : str
        ``type`` of every event (the session-rec files hold clicks).
    source : str, optional
        Prefix of ``event_id`` (and of session/user ids where they are made up); default the file stem.

    Raises
    ------
    ReplayFormatError
        If the file is not UTF-8 text, a column is missing, a row does not parse (its column count, a
        ``Time`` that is no number) or ``Time`` looks like milliseconds.
    """
    path = Path(path)
    try:
        with path.open("r", encoding="utf-8") as f:
            header = f.readline().rstrip("\r\n").split("\t")
    except UnicodeDecodeError as exc:  # a binary file, or another encoding
        raise ReplayFormatError(f"{path}: not a session-rec TSV (UTF-8 text): {exc}") from exc
    missing = {"SessionId", "ItemId", "Time"} - set(header)
    if missing:
        raise ReplayFormatError(
            f"{path}: session-rec TSV needs columns SessionId, ItemId, Time; missing {sorted(missing)}"
        )
    types = {c: pa.string() for c in header if c != "Time"} | {"Time": pa.float64()}
    try:
        table = pcsv.read_csv(
            path,
            parse_options=pcsv.ParseOptions(delimiter="\t"),
            convert_options=pcsv.ConvertOptions(column_types=types),
        )
    except pa.ArrowInvalid as exc:  # a row with another column count, a Time that is no number
        raise ReplayFormatError(f"{path}: not a readable session-rec TSV: {exc}") from exc
    ts = table.column("Time").to_numpy()
    if len(ts) and np.nanmax(ts) > _MS_THRESHOLD:
        raise ReplayFormatError(
            f"{path}: Time: must be unix seconds; got {float(np.nanmax(ts))!r} (looks like milliseconds)"
        )
    order = np.argsort(ts, kind="stable")[:limit]
    sessions = _canonical_ids(path, "SessionId", table.column("SessionId").to_pylist())
    items = _canonical_ids(path, "ItemId", table.column("ItemId").to_pylist())
    users = _canonical_ids(path, "UserId", table.column("UserId").to_pylist()) if "UserId" in header else sessions
    stem = source or path.stem
    for row in order.tolist():
        yield Event(
            event_id=f"{stem}:{row}",
            ts=float(ts[row]),
            type=event_type,
            user_id=users[row],
            session_id=sessions[row],
            item_id=items[row],
        )


# ---------------------------------------------------------------------- SR-GNN pickles
class _NoGlobalsUnpickler(pickle.Unpickler):
    """Loads plain containers and numbers only; any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in an SR-GNN pickle")


def _load_srgnn(path: Path) -> list[list[Any]]:
    """Sessions from an SR-GNN pickle: full sessions, or ``(prefixes, next)`` pairs joined into sessions."""
    try:
        obj = _NoGlobalsUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ReplayFormatError(f"{path}: not an SR-GNN pickle: {exc}") from exc
    if not isinstance(obj, list | tuple) or not obj:
        raise ReplayFormatError(
            f"{path}: expected a non-empty list of sessions or (prefixes, next); got {type(obj).__name__}"
        )
    # sessions and prefixes are lists; a timed click is an (item_id, unix_s) tuple
    is_pairs = (
        len(obj) == 2
        and isinstance(obj[0], list)
        and isinstance(obj[1], list)
        and len(obj[0]) == len(obj[1])
        and all(isinstance(p, list) for p in obj[0][:100])
        and not any(isinstance(n, list) for n in obj[1][:100])
    )
    if is_pairs:
        return [[*prefix, nxt] for prefix, nxt in zip(obj[0], obj[1], strict=True)]
    if not all(isinstance(s, list) for s in obj):
        raise ReplayFormatError(f"{path}: expected a list of sessions (lists of item ids)")
    return [list(s) for s in obj]


def _click(path: Path, click: Any) -> tuple[str, float | None]:
    if isinstance(click, int):
        return str(click), None
    if isinstance(click, list | tuple) and len(click) == 2 and isinstance(click[0], int):
        t = float(click[1])
        if t > _MS_THRESHOLD:
            raise ReplayFormatError(
                f"{path}: click time: must be unix seconds; got {click[1]!r} (looks like milliseconds)"
            )
        return str(click[0]), t
    raise ReplayFormatError(
        f"{path}: a click must be an int item id or (item_id, unix_seconds); got {click!r}"
    )


def read_srgnn(
    path: str | Path,
    *,
    limit: int | None = None,
    start_ts: float = 1_700_000_000.0,
    gap_s: float = 1.0,
    event_type: str = "view",
    source: str | None = None,
) -> Iterator[Event]:
    """Yield one event per click of an SR-GNN-style pickle, in time order; each session is its own user.

    Parameters
    ----------
    path : str or Path
        ``all_train_seq.txt`` (``list[list[int]]``), ``test.txt`` (``(prefixes, next)``), or a timed
        variant whose clicks are ``(item_id, unix_seconds)`` (``all_test_seq_time.txt``, ``test_time.txt``).
        A ``(prefix, next)`` pair becomes one session ``prefix + [next]``.
    limit : int, optional
        Stop after this many events.
    start_ts, gap_s : float
        Synthetic time for untimed files: session after session, one click every ``gap_s`` seconds.
    event_type : str
        ``type`` of every event.
    source : str, optional
        Prefix of ``event_id`` (and of session/user ids where they are made up); default the file stem.

    Raises
    ------
    ReplayFormatError
        If the pickle holds anything but lists/tuples of clicks, or references any global.
    """
    path = Path(path)
    sessions = _load_srgnn(path)
    stem = source or path.stem
    first = next((c for s in sessions for c in s), None)
    if first is None or _click(path, first)[1] is None:  # untimed: generated in time order, stream it
        t, n = start_ts, 0
        for s, clicks in enumerate(sessions):
            for pos, click in enumerate(clicks):
                if limit is not None and n >= limit:
                    return
                item, ts = _click(path, click)
                if ts is not None:
                    raise ReplayFormatError(
                        f"{path}: session {s} has a timed click {click!r}; the file starts untimed"
                    )
                yield _view(stem, s, pos, t, item, event_type)
                t, n = t + gap_s, n + 1
        return
    rows: list[tuple[float, int, int, str]] = []  # (ts, session, position, item_id)
    for s, clicks in enumerate(sessions):
        for pos, click in enumerate(clicks):
            item, ts = _click(path, click)
            if ts is None:
                raise ReplayFormatError(
                    f"{path}: session {s} has an untimed click {click!r}; the file starts timed"
                )
            rows.append((ts, s, pos, item))
    rows.sort()
    for ts, s, pos, item in rows[:limit]:
        yield _view(stem, s, pos, ts, item, event_type)


def _view(stem: str, session: int, pos: int, ts: float, item: str, event_type: str) -> Event:
    sid = f"{stem}:{session}"
    return Event(event_id=f"{sid}:{pos}", ts=ts, type=event_type, user_id=sid, session_id=sid, item_id=item)


# ---------------------------------------------------------------------- UCI Online Retail
def _customer_id(value: float | None, invoice: str) -> str:
    """``CustomerID`` (a float column in the parquet) as its canonical id; ``guest-<invoice>`` when missing."""
    if value is None or math.isnan(value):
        return f"guest-{invoice}"
    try:
        return canonical_id(value)
    except BadId as exc:
        raise ReplayFormatError(f"CustomerID: {exc} in invoice {invoice}") from exc


def _read_retail(path: Path, cleaning: RetailCleaning | None,
                 report: CleaningReport | None) -> pa.Table:
    """The cleaned purchase lines of an Online Retail log (parquet or csv); ``report`` gets the counts."""
    try:
        table = read_retail_table(path)
    except ValueError as exc:
        raise ReplayFormatError(str(exc)) from exc
    table, counts = clean_retail(table, cleaning)
    if report is not None:
        report.__dict__.update(counts.__dict__)
    return table


def read_online_retail(
    path: str | Path, *, limit: int | None = None, source: str | None = None,
    cleaning: RetailCleaning | None = None, report: CleaningReport | None = None,
) -> Iterator[Event]:
    """Yield one ``pos_purchase`` per invoice (its cleaned lines as ``items``), in time order.

    The log is cleaned first by the shared rule (``operators.retail_cleaning``: non-product
    codes, negative and zero prices, cancellations netted against earlier purchases, guests);
    an invoice with no line left yields nothing. ``event_id`` is ``<file stem>:<InvoiceNo>``,
    ``session_id`` the invoice, ``extra`` holds the ``country``.

    Parameters
    ----------
    path : str or Path
        The ``.parquet`` or ``.csv`` file.
    limit : int, optional
        Stop after this many events (invoices).
    source : str, optional
        Prefix of ``event_id`` (and of session/user ids where they are made up); default the file stem.
    cleaning : RetailCleaning, optional
        The rule (default: the documented defaults; ``cleaning_rule(settings.retail_cleaning)``).
    report : CleaningReport, optional
        Filled with the counts of every rule's effect when the reading starts.
    """
    path = Path(path)
    table = _read_retail(path, cleaning, report)
    invoice = table.column("InvoiceNo").to_numpy(zero_copy_only=False).astype(str)
    when = table.column("InvoiceDate").cast(pa.timestamp("us")).cast(pa.int64()).to_numpy() / 1e6
    # order rows by (first time of their invoice, invoice, row): invoices stay contiguous
    uniq, inv_idx = np.unique(invoice, return_inverse=True)
    first_ts = np.full(len(uniq), np.inf)
    np.minimum.at(first_ts, inv_idx, when)
    order = np.lexsort((np.arange(len(invoice)), inv_idx, first_ts[inv_idx]))
    inv_sorted = inv_idx[order]
    starts = np.flatnonzero(np.r_[True, inv_sorted[1:] != inv_sorted[:-1]])
    ends = np.r_[starts[1:], len(order)]
    stock = _canonical_ids(path, "StockCode", table.column("StockCode").to_pylist())
    qty = table.column("Quantity").to_pylist()
    price = table.column("UnitPrice").to_pylist()
    customer = table.column("CustomerID").to_pylist()
    country = table.column("Country").to_pylist()
    stem = source or path.stem
    for n, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        if limit is not None and n >= limit:
            return
        rows = order[a:b].tolist()
        inv = str(uniq[inv_sorted[a]])
        first = rows[0]
        yield Event(
            event_id=f"{stem}:{inv}",
            ts=float(first_ts[inv_sorted[a]]),
            type="pos_purchase",
            user_id=_customer_id(customer[first], inv),
            session_id=inv,
            items=tuple(
                BasketLine(item_id=stock[r], quantity=float(qty[r]), price=price[r]) for r in rows
            ),
            extra={"country": country[first]} if country[first] is not None else None,
        )


def online_retail_catalog(path: str | Path, cleaning: RetailCleaning | None = None) -> list[dict]:
    """Item records from Online Retail's cleaned lines (no postage, fees or adjustments): ``item_id``
    (StockCode), ``title`` (its most frequent Description), ``price`` (median UnitPrice), ``n_lines``; sorted by item_id."""
    path = Path(path)
    table = _read_retail(path, cleaning, None)
    titles: dict[str, dict[str, int]] = {}
    prices: dict[str, list[float]] = {}
    codes = _canonical_ids(path, "StockCode", table.column("StockCode").to_pylist())
    for code, desc, p in zip(codes, table.column("Description").to_pylist(), table.column("UnitPrice").to_pylist(),
                             strict=True):
        if desc:
            d = titles.setdefault(code, {})
            d[desc] = d.get(desc, 0) + 1
        prices.setdefault(code, []).append(p)
    out = []
    for code in sorted(prices):
        desc_counts = titles.get(code, {})
        title = max(desc_counts, key=lambda k: (desc_counts[k], k)).strip() if desc_counts else None
        out.append(
            {
                "item_id": code,
                "title": title,
                "price": float(np.median(prices[code])),
                "n_lines": len(prices[code]),
            }
        )
    return out


# ---------------------------------------------------------------------- dispatch
def read_replay(
    path: str | Path, fmt: str, *, limit: int | None = None, source: str | None = None,
    cleaning: RetailCleaning | None = None, report: CleaningReport | None = None,
) -> Iterator[Event]:
    """Events of ``path`` read as ``fmt`` (one of ``REPLAY_FORMATS``), in time order.

    ``cleaning`` and ``report`` apply to ``online_retail`` (see ``read_online_retail``).

    Raises
    ------
    ValueError
        If ``fmt`` is not a known format (the message lists them).
    """
    if fmt == "online_retail":
        return read_online_retail(path, limit=limit, source=source, cleaning=cleaning, report=report)
    readers = {"sessionrec": read_sessionrec, "srgnn": read_srgnn}
    if fmt not in readers:
        raise ValueError(f"format: must be one of {list(REPLAY_FORMATS)}; got {fmt!r}")
    return readers[fmt](path, limit=limit, source=source)


def replay_catalog(path: str | Path, fmt: str, cleaning: RetailCleaning | None = None) -> list[dict]:
    """Item records a log carries (Online Retail: title and price of cleaned lines); empty for click-only formats."""
    return online_retail_catalog(path, cleaning) if fmt == "online_retail" else []


def resolve_log_path(path: str | Path, fmt: str) -> Path:
    """The log file to replay when ``path`` is a dataset directory (as under ../shared/datasets).

    sessionrec: the ``*train_full*`` file (else the only ``.txt``/``.tsv``); srgnn:
    ``all_train_seq.txt``; online_retail: the ``.parquet`` or ``.csv`` file.

    Raises
    ------
    ReplayFormatError
        If the directory holds no file of that format.
    """
    path = Path(path)
    if path.is_file():
        return path
    pick: list[Path]
    if fmt == "sessionrec":
        pick = sorted(path.glob("*train_full*")) or sorted(p for p in path.iterdir() if p.suffix in (".txt", ".tsv"))
    elif fmt == "srgnn":
        pick = [p for p in (path / "all_train_seq.txt",) if p.exists()]
    else:
        pick = sorted(p for p in path.iterdir() if p.suffix in (".parquet", ".csv"))
    if not pick:
        raise ReplayFormatError(f"path: no {fmt} log file in directory {path}")
    return pick[0]

