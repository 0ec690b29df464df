"""The Online Retail cleaning rule (issue 15): non-product codes, adjustments, cancellations netted,
guests counted, CSV input; the same rule in the replay reader and the training loader."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.data.online_retail import load_online_retail
from models.data.retail_cleaning import DEFAULT_FEE_PATTERN, DEFAULT_NON_PRODUCT_CODES
from operators.retail_cleaning import (
    CleaningReport,
    RetailCleaning,
    clean_retail,
    cleaning_rule,
    read_retail_table,
)
from operators.settings import RetailCleaningSettings
from simulators.replay import online_retail_catalog, read_online_retail

T = dt.datetime
# (invoice, code, description, qty, time, price, customer)
ROWS = [
    ("1001", "85123A", "WHITE HEART", 6, T(2010, 12, 1, 8, 26), 2.55, 17850.0),
    ("1001", "POST", "POSTAGE", 1, T(2010, 12, 1, 8, 26), 18.0, 17850.0),
    ("1001", "23099", "FRENCH CARRIAGE LANTERN", 2, T(2010, 12, 1, 8, 26), 4.95, 17850.0),  # a product
    ("1002", "85123A", "WHITE HEART", 4, T(2010, 12, 2, 9, 0), 2.55, 17850.0),
    ("1002", "23444", "Next Day Carriage", 1, T(2010, 12, 2, 9, 0), 15.0, 17850.0),  # a fee by its description
    ("1002", "gift_0001_20", "Dotcomgiftshop Gift Voucher £20.00", 1, T(2010, 12, 2, 9, 0), 17.0, 17850.0),
    ("C1003", "85123A", "WHITE HEART", -5, T(2010, 12, 3, 10, 0), 2.55, 17850.0),  # nets 4 from 1002, 1 from 1001
    ("C1004", "22633", "HAND WARMER", -3, T(2010, 12, 3, 11, 0), 1.85, 13047.0),  # nothing to net: unmatched
    ("C1005", "POST", "POSTAGE", -1, T(2010, 12, 3, 12, 0), 18.0, 17850.0),  # a non-product cancellation
    ("A1006", "B", "Adjust bad debt", 1, T(2010, 12, 4, 0, 0), -11062.06, None),
    ("1007", "22633", "HAND WARMER", 2, T(2010, 12, 5, 0, 0), 1.85, None),  # a guest
    ("1008", "22633", "damaged", -10, T(2010, 12, 5, 1, 0), 0.0, None),  # stock correction
    ("1009", "71053", "METAL LANTERN", 3, T(2010, 12, 6, 0, 0), -1.0, 13047.0),  # negative price
    ("1010", "71053", "METAL LANTERN", -2, T(2010, 12, 6, 1, 0), 3.39, 13047.0),  # qty <= 0, not a cancellation
    ("1011", "m", "Manual", 1, T(2010, 12, 7, 0, 0), 5.0, 13047.0),
    ("1012", "71053", "METAL LANTERN", 1, T(2010, 12, 8, 0, 0), 3.39, 13047.0),
    ("1012", "22633", "HAND WARMER", 1, T(2010, 12, 8, 0, 0), 1.85, 13047.0),
]
COLUMNS = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"]


def _parquet(path: Path) -> Path:
    cols = {c: [r[i] for r in ROWS] for i, c in enumerate(COLUMNS)} | {"Country": ["United Kingdom"] * len(ROWS)}
    types = {"InvoiceDate": pa.timestamp("us"), "CustomerID": pa.float64()}
    pq.write_table(pa.table({k: pa.array(v, type=types.get(k)) for k, v in cols.items()}), path)
    return path


def _csv(path: Path) -> Path:  # the UCI file's own layout and date format
    lines = ["InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"]
    for inv, code, desc, qty, when, price, cust in ROWS:
        d = f"{when.month}/{when.day}/{when.year} {when.hour}:{when.minute:02d}"
        lines.append(f'{inv},{code},"{desc}",{qty},{d},{price},{"" if cust is None else cust},United Kingdom')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_rule_and_counts(tmp_path):
    table, rep = clean_retail(read_retail_table(_parquet(tmp_path / "r.parquet")))
    kept = {(r["InvoiceNo"], r["StockCode"]): r["Quantity"] for r in table.to_pylist()}
    assert kept == {("1001", "85123A"): 5, ("1001", "23099"): 2, ("1007", "22633"): 2, ("1012", "71053"): 1,
                    ("1012", "22633"): 1}
    assert rep.non_product_codes == {"POST": 2, "23444": 1, "gift_0001_20": 1, "B": 1, "m": 1}
    assert (rep.rows_read, rep.non_product, rep.negative_price, rep.zero_price, rep.non_positive_quantity) == (17, 6, 1, 1, 1)
    assert (rep.cancellation_lines, rep.cancelled_quantity, rep.netted_quantity, rep.unmatched_cancelled_quantity) == (2, 8, 5, 3)
    assert (rep.purchase_lines_removed_by_cancellation, rep.purchase_lines_reduced) == (1, 1)
    assert (rep.no_customer, rep.purchase_lines_kept, rep.invoices_kept) == (1, 5, 3)
    assert any("netted" in line for line in rep.lines())
    _, no_guests = clean_retail(read_retail_table(tmp_path / "r.parquet"), RetailCleaning(keep_guests=False))
    assert no_guests.purchase_lines_kept == 4 and no_guests.no_customer == 1


def test_csv_equals_parquet_and_replay_uses_the_rule(tmp_path):
    pq_events = list(read_online_retail(_parquet(tmp_path / "r.parquet")))
    report = CleaningReport()
    csv_events = list(read_online_retail(_csv(tmp_path / "r.csv"), source="r", report=report))
    assert csv_events == pq_events
    assert report.netted_quantity == 5 and report.non_product == 6
    assert [(e.user_id, [(line.item_id, line.quantity) for line in e.items]) for e in pq_events] == [
        ("17850", [("85123A", 5.0), ("23099", 2.0)]), ("guest-1007", [("22633", 2.0)]),
        ("13047", [("71053", 1.0), ("22633", 1.0)])]
    codes = {i["item_id"] for i in online_retail_catalog(tmp_path / "r.csv")}
    assert codes == {"85123A", "23099", "22633", "71053"}  # no postage, fees or adjustments in the catalog


def test_training_loader_uses_the_rule(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    _csv(d / "retail.csv")
    ds = load_online_retail(d, test_days=0.5, min_item_support=1)
    items = set(ds.train.item_ids or ())
    assert "POST" not in items and "23444" not in items and "85123A" in items
    assert ds.cleaning.netted_quantity == 5


def test_settings_defaults_are_the_rule():
    s = RetailCleaningSettings()
    assert cleaning_rule(s) == RetailCleaning()
    assert tuple(s.non_product_codes) == DEFAULT_NON_PRODUCT_CODES and s.fee_pattern == DEFAULT_FEE_PATTERN


def test_unsupported_file(tmp_path):
    (tmp_path / "r.xlsx").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.parquet or \.csv"):
        read_retail_table(tmp_path / "r.xlsx")


def test_a_date_that_does_not_parse_names_the_file(tmp_path):
    """It was pyarrow's bare 'Failed to parse string' (naming no file) from eval, replay and run --replay."""
    path = tmp_path / "r.csv"
    path.write_text("InvoiceNo,StockCode,Quantity,InvoiceDate,CustomerID\n"
                    "1,A,1,12/1/2010 8:26,17850\n2,B,1,next tuesday,17850\n")
    with pytest.raises(ValueError, match=r"r\.csv: InvoiceDate must be a date .*'next tuesday'"):
        read_retail_table(path)


@pytest.mark.parametrize(("rows", "expected"), [
    ("1,A,1,,17850\n", r"r\.csv: InvoiceDate: 1 empty values, e\.g\. row 1$"),
    ("1,A,1,12/1/2010 8:27,1e30\n", r"r\.csv: CustomerID must be a whole number .*; got 1e\+30 in row 1$"),
    ("1,A,1,12/1/2010 8:27,12.5\n", r"CustomerID .*; got 12\.5 in row 1$"),
])
def test_an_empty_date_or_a_customer_id_that_is_no_whole_number_names_the_row(tmp_path, rows, expected):
    """An empty InvoiceDate was accepted (a null time), CustomerID 1e30 became a garbage int64 id and 12.5 customer 12."""
    path = tmp_path / "r.csv"
    path.write_text("InvoiceNo,StockCode,Quantity,InvoiceDate,CustomerID\n1,A,1,12/1/2010 8:26,17850\n" + rows)
    with pytest.raises(ValueError, match=expected):
        read_retail_table(path)
    path.write_text("InvoiceNo,StockCode,Quantity,InvoiceDate,CustomerID\n1,A,1,12/1/2010 8:26,17850\n2,B,1,12/1/2010 8:27,\n")
    assert read_retail_table(path).num_rows == 2  # no CustomerID is a guest, as before
