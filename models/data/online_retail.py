"""Loader for UCI Online Retail: invoice = basket (session), customer = user."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.data.encoding import Dataset, encode_test, encode_train

__all__ = ["load_online_retail"]

_DAY_S = 86_400.0


def load_online_retail(data_dir: Path, *, test_days: float = 14.0, min_item_support: int = 5) -> Dataset:
    """Load the UCI Online Retail parquet as a session dataset of baskets.

    Cancellations (invoice numbers starting with ``C``), rows with quantity <= 0 and rows
    without a stock code are dropped; then items bought fewer than ``min_item_support`` times
    and baskets with fewer than 2 remaining lines. Baskets whose time falls in the last
    ``test_days`` days are the test set (session-rec's time split); the order inside a basket
    is the file's row order (all lines of an invoice share one timestamp).

    Parameters
    ----------
    data_dir : Path
        Holds one ``*.parquet`` file with columns InvoiceNo, StockCode, Quantity,
        InvoiceDate, CustomerID.
    test_days : float
        Length of the test period in days.
    min_item_support : int
        Minimum number of lines per StockCode.

    Returns
    -------
    Dataset; ``train.user_idx`` holds the customer (``""`` = unknown customer is its own code).

    Raises
    ------
    FileNotFoundError
        If the directory holds no parquet file.
    """
    data_dir = Path(data_dir)
    files = sorted(data_dir.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{data_dir}: no *.parquet file (UCI Online Retail layout)")
    t = pq.read_table(files[0], columns=["InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "CustomerID"])
    inv = np.asarray(t["InvoiceNo"].to_numpy(zero_copy_only=False), dtype=str)
    item = np.asarray(t["StockCode"].fill_null("").to_numpy(zero_copy_only=False), dtype=str)
    qty = t["Quantity"].to_numpy(zero_copy_only=False)
    ts = pc.cast(t["InvoiceDate"], "int64").to_numpy(zero_copy_only=False) / 1e6
    cust_f = t["CustomerID"].to_numpy(zero_copy_only=False)
    cust = np.where(np.isnan(cust_f), "", np.nan_to_num(cust_f).astype(np.int64).astype(str))
    keep = (np.char.find(inv, "C") != 0) & (qty > 0) & (item != "")
    inv, item, ts, cust = inv[keep], item[keep], ts[keep], cust[keep]
    uniq, inv_code, counts = np.unique(item, return_inverse=True, return_counts=True)
    keep = counts[inv_code] >= min_item_support
    inv, item, ts, cust = inv[keep], item[keep], ts[keep], cust[keep]
    u_inv, inv_code, counts = np.unique(inv, return_inverse=True, return_counts=True)
    keep = counts[inv_code] >= 2
    inv, item, ts, cust = inv[keep], item[keep], ts[keep], cust[keep]
    if len(ts) == 0:
        raise ValueError(f"{files[0].name}: no baskets left after dropping cancellations, items with < "
                         f"{min_item_support} lines and baskets with < 2 lines")
    is_test = ts >= ts.max() - test_days * _DAY_S
    log, _ = encode_train(inv[~is_test], item[~is_test], ts[~is_test], user_keys=cust[~is_test])
    task, dropped = encode_test(log.item_ids or (), inv[is_test], item[is_test], ts[is_test])
    return Dataset(name=data_dir.name, train=log, test=task, n_dropped_test=dropped)
