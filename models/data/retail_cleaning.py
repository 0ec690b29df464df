"""The cleaning rule of UCI Online Retail style logs, shared by replay (simulators/replay.py) and training/eval
(models/data/online_retail.py), with a count of every rule's effect.

Rules, in this order (each row is counted under the first rule that removes it):

=========================  ===================================================================
rule                       effect
=========================  ===================================================================
``no_stock_code``          a row without a StockCode is dropped
``non_product``            postage, fees and adjustments are not products: a code in
                           ``non_product_codes`` (case-insensitive; default POST, DOT, M, C2, D,
                           S, B, BANK CHARGES, AMAZONFEE, CRUK, PADS) or whose most frequent
                           Description is a fee by ``fee_pattern`` (only a fee word —
                           postage, carriage, fee, charge, commission, manual, discount,
                           sample, adjustment, bad debt — after an optional qualifier such as
                           "Next Day", "AMAZON", "PACKING"; or a gift voucher) is dropped,
                           wherever it appears (purchases and cancellations)
``negative_price``         a line with UnitPrice < 0 is an accounting adjustment: dropped
``zero_price``             a line with UnitPrice == 0 (stock corrections, free samples): dropped
``non_positive_quantity``  a non-cancellation line with Quantity <= 0 (stock write-off): dropped
``cancellation``           a ``C…`` invoice line is netted against the same customer's earlier
                           purchase lines of the same StockCode, newest first: their quantity
                           goes down, a line at 0 is removed; quantity that finds no purchase
                           (bought before the log starts, or no customer) is counted as unmatched
``no_customer``            lines without CustomerID are kept, each invoice its own guest user
                           (``keep_guests``), or dropped; counted either way
=========================  ===================================================================
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

__all__ = ["RETAIL_COLUMNS", "DEFAULT_NON_PRODUCT_CODES", "DEFAULT_FEE_PATTERN", "RetailCleaning",
           "CleaningReport", "read_retail_table", "clean_retail"]

RETAIL_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID",
                  "Country")
DEFAULT_NON_PRODUCT_CODES: tuple[str, ...] = ("POST", "DOT", "M", "C2", "D", "S", "B", "BANK CHARGES", "AMAZONFEE",
                                              "CRUK", "PADS")
DEFAULT_FEE_PATTERN = (r"^\W*(?:(?:next day|dotcom|amazon|bank|packing|cruk|manual)\s+)*"
                       r"(?:postage|carriage|fees?|charges?|commission|manual|discount|samples?|re-?adjust\w*|"
                       r"adjust(?:ment)?(?: bad debt)?)\W*$|gift voucher")
"""A description that is only a fee word (optionally after a qualifier: ``Next Day Carriage``,
``AMAZON FEE``, ``PACKING CHARGE``), or a gift voucher; ``FRENCH CARRIAGE LANTERN`` is a product."""

_REQUIRED = ("InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "CustomerID")
_CSV_TYPES = {"InvoiceNo": pa.string(), "StockCode": pa.string(), "Description": pa.string(),
              "Quantity": pa.int64(), "UnitPrice": pa.float64(), "CustomerID": pa.float64(), "Country": pa.string()}
_TIME_FORMATS = ["%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%d/%m/%Y %H:%M"]


@dataclass(frozen=True)
class RetailCleaning:
    """What counts as a product and what to do with guests (see the module's table)."""

    non_product_codes: tuple[str, ...] = DEFAULT_NON_PRODUCT_CODES
    fee_pattern: str = DEFAULT_FEE_PATTERN
    keep_guests: bool = True


@dataclass
class CleaningReport:
    """Counts of every rule's effect (rows unless named otherwise)."""

    rows_read: int = 0
    no_stock_code: int = 0
    non_product: int = 0
    non_product_codes: dict[str, int] = field(default_factory=dict)
    negative_price: int = 0
    zero_price: int = 0
    non_positive_quantity: int = 0
    cancellation_lines: int = 0
    cancelled_quantity: int = 0
    netted_quantity: int = 0
    unmatched_cancelled_quantity: int = 0
    purchase_lines_reduced: int = 0
    purchase_lines_removed_by_cancellation: int = 0
    no_customer: int = 0
    no_customer_kept_as_guests: bool = True
    purchase_lines_kept: int = 0
    invoices_kept: int = 0

    def lines(self) -> list[str]:
        """Human-readable lines, one per rule, for the end of a replay or a training run."""
        top = ", ".join(f"{c} {n}" for c, n in sorted(self.non_product_codes.items(), key=lambda kv: -kv[1])[:12])
        guests = "kept, one guest user per invoice" if self.no_customer_kept_as_guests else "dropped"
        return [
            f"rows read: {self.rows_read}",
            f"no StockCode: {self.no_stock_code} dropped",
            f"non-product codes (postage, fees, adjustments): {self.non_product} rows dropped"
            + (f" ({len(self.non_product_codes)} codes: {top})" if self.non_product_codes else ""),
            f"negative price (adjustments): {self.negative_price} dropped",
            f"zero price: {self.zero_price} dropped",
            f"quantity <= 0 outside cancellations: {self.non_positive_quantity} dropped",
            f"cancellations: {self.cancellation_lines} lines, quantity {self.cancelled_quantity}: "
            f"{self.netted_quantity} netted against earlier purchases ({self.purchase_lines_reduced} lines reduced, "
            f"{self.purchase_lines_removed_by_cancellation} removed), {self.unmatched_cancelled_quantity} unmatched",
            f"no CustomerID: {self.no_customer} purchase lines, {guests}",
            f"kept: {self.purchase_lines_kept} purchase lines in {self.invoices_kept} invoices",
        ]


def read_retail_table(path: str | Path) -> pa.Table:
    """The log's columns (``RETAIL_COLUMNS``) from a ``.parquet`` or ``.csv`` file (the UCI CSV's
    ``InvoiceDate`` as ``12/1/2010 8:26`` or ISO); ``InvoiceDate`` as timestamp[us], no zone.

    ``InvoiceNo StockCode Quantity InvoiceDate CustomerID`` are required; ``Description``,
    ``UnitPrice`` and ``Country`` are nulls when absent.

    Raises
    ------
    ValueError
        If the file is of another kind or lacks a column (the message names the file and the columns), an
        ``InvoiceDate`` is empty or unreadable, or a ``CustomerID`` is not a whole number (the file and the row).
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
                column_types=_CSV_TYPES, timestamp_parsers=_TIME_FORMATS))
        elif path.suffix.lower() == ".parquet":
            table = pq.read_table(path)
        else:
            raise ValueError(f"{path}: Online Retail logs are .parquet or .csv; got {path.suffix or 'no suffix'!r}")
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{path}: not a readable Online Retail log: {exc}") from exc
    missing = [c for c in _REQUIRED if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: Online Retail needs columns {list(_REQUIRED)}; missing {missing}")
    cols = {}
    for c in RETAIL_COLUMNS:  # optional columns absent from the file are nulls (no price: price rules do not apply)
        cols[c] = table.column(c) if c in table.column_names else pa.nulls(table.num_rows, _CSV_TYPES.get(c, pa.string()))
    try:  # a date none of _TIME_FORMATS reads leaves the CSV column as text
        cols["InvoiceDate"] = cols["InvoiceDate"].cast(pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"{path}: InvoiceDate must be a date such as 12/1/2010 8:26 or ISO 8601: {exc}") from exc
    if cols["InvoiceDate"].null_count:  # an invoice without a date has no place in time (the split, the order)
        empty = np.flatnonzero(cols["InvoiceDate"].is_null().to_numpy(zero_copy_only=False))
        raise ValueError(f"{path}: InvoiceDate: {len(empty)} empty values, e.g. row {int(empty[0])}")
    cust = pc.cast(cols["CustomerID"], pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
    bad = ~(np.isfinite(cust) & (np.abs(cust) < 2.0 ** 53) & (cust == np.floor(cust)))
    if bad.any():  # 1e30 became a garbage int64 id, 12.5 customer 12
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path}: CustomerID must be a whole number (below 2**53) or empty; got {float(cust[row])!r} in row {row}")
    return pa.table(cols)


def _non_product(codes: np.ndarray, desc: list[str | None], rules: RetailCleaning) -> np.ndarray:
    """Mask of rows whose code is a non-product: listed, or its most frequent description is a fee."""
    listed = {c.upper() for c in rules.non_product_codes}
    pattern = re.compile(rules.fee_pattern, re.IGNORECASE)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for c, d in zip(codes.tolist(), desc, strict=True):
        if d:
            counts[c][d] += 1
    bad = {c for c in set(codes.tolist()) if c.upper() in listed}
    for c, ds in counts.items():
        top = max(ds, key=lambda d: (ds[d], d))
        if pattern.search(top):
            bad.add(c)
    return np.isin(codes, np.asarray(sorted(bad), dtype=codes.dtype)) if bad else np.zeros(len(codes), bool)


def clean_retail(table: pa.Table, rules: RetailCleaning | None = None) -> tuple[pa.Table, CleaningReport]:
    """Apply the rule (module docstring) to a log table; returns the kept purchase lines (Quantity
    netted) in file order, and the counts.

    Parameters
    ----------
    table : pyarrow.Table with ``RETAIL_COLUMNS`` (``read_retail_table``)
    rules : RetailCleaning, optional
        Default ``RetailCleaning()``.
    """
    rules = rules or RetailCleaning()
    rep = CleaningReport(rows_read=table.num_rows, no_customer_kept_as_guests=rules.keep_guests)
    code = np.asarray(table.column("StockCode").fill_null("").to_numpy(zero_copy_only=False), dtype=str)
    code = np.char.strip(code)
    inv = np.asarray(table.column("InvoiceNo").fill_null("").to_numpy(zero_copy_only=False), dtype=str)
    qty = table.column("Quantity").fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    price = table.column("UnitPrice").fill_null(np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
    cust_f = table.column("CustomerID").to_numpy(zero_copy_only=False).astype(np.float64)
    ts = pc.cast(table.column("InvoiceDate"), pa.int64()).to_numpy(zero_copy_only=False)
    cancel = np.char.startswith(inv, "C")
    alive = np.ones(len(code), bool)

    def drop(mask: np.ndarray) -> int:
        hit = mask & alive
        alive[hit] = False
        return int(hit.sum())

    rep.no_stock_code = drop(code == "")
    np_mask = _non_product(code, table.column("Description").to_pylist(), rules) & alive
    if np_mask.any():
        u, n = np.unique(code[np_mask], return_counts=True)
        rep.non_product_codes = {str(a): int(b) for a, b in zip(u, n, strict=True)}
    rep.non_product = drop(np_mask)
    rep.negative_price = drop(price < 0)
    rep.zero_price = drop(price == 0)
    rep.non_positive_quantity = drop(~cancel & (qty <= 0))
    # cancellations: net against the same customer's earlier purchases of the code, newest first
    is_cancel = cancel & alive
    alive &= ~cancel
    rep.cancellation_lines = int(is_cancel.sum())
    purchases: dict[tuple[float, str], list[int]] = defaultdict(list)
    for r in np.flatnonzero(alive & ~np.isnan(cust_f)).tolist():
        purchases[(cust_f[r], code[r])].append(r)
    for rows in purchases.values():
        rows.sort(key=lambda r: (ts[r], r))
    left = qty.copy()
    for r in sorted(np.flatnonzero(is_cancel).tolist(), key=lambda r: (ts[r], r)):
        want = -int(qty[r]) if qty[r] < 0 else int(qty[r])
        rep.cancelled_quantity += want
        for p in reversed(purchases.get((cust_f[r], code[r]), []) if not np.isnan(cust_f[r]) else []):
            if want == 0:
                break
            if ts[p] > ts[r] or left[p] <= 0:
                continue
            take = min(want, int(left[p]))
            left[p] -= take
            want -= take
            rep.netted_quantity += take
        rep.unmatched_cancelled_quantity += want
    reduced = alive & (left < qty)
    rep.purchase_lines_removed_by_cancellation = int((reduced & (left <= 0)).sum())
    rep.purchase_lines_reduced = int((reduced & (left > 0)).sum())
    alive &= left > 0
    guest = alive & np.isnan(cust_f)
    rep.no_customer = int(guest.sum())
    if not rules.keep_guests:
        alive &= ~guest
    rows = np.flatnonzero(alive)
    out = table.take(pa.array(rows))
    out = out.set_column(out.schema.get_field_index("Quantity"), "Quantity", pa.array(left[rows], pa.int64()))
    rep.purchase_lines_kept = len(rows)
    rep.invoices_kept = len(np.unique(inv[rows])) if len(rows) else 0
    return out, rep
