"""Loader for UCI Online Retail: invoice = basket (session), customer = user."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from models.data.encoding import Dataset, encode_test, encode_train
from models.data.retail_cleaning import RetailCleaning, clean_retail, read_retail_table

__all__ = ["load_online_retail"]

_DAY_S = 86_400.0


def load_online_retail(data_dir: Path, *, test_days: float = 14.0, min_item_support: int = 5,
                       cleaning: RetailCleaning | None = None) -> Dataset:
    """Load the UCI Online Retail log (``.parquet`` or ``.csv``) as a session dataset of baskets.

    The log is cleaned by the rule replay uses too (``models.data.retail_cleaning``: non-product
    codes, negative and zero prices, cancellations netted against earlier purchases; lines
    without a customer are one guest per invoice); then items bought fewer than
    ``min_item_support`` times and baskets with fewer than 2 remaining lines are dropped.
    Baskets whose time falls in the last ``test_days`` days are the test set (session-rec's time
    split); the order inside a basket is the file's row order (all lines of an invoice share one
    timestamp).

    Parameters
    ----------
    data_dir : Path
        Holds one ``*.parquet`` (or ``*.csv``) file with the UCI columns.
    test_days : float
        Length of the test period in days.
    min_item_support : int
        Minimum number of lines per StockCode.
    cleaning : RetailCleaning, optional
        The cleaning rule (default: the documented defaults).

    Returns
    -------
    Dataset; ``train.user_idx`` holds the customer (``guest-<invoice>`` when unknown), ``cleaning``
    the ``CleaningReport``.

    Raises
    ------
    FileNotFoundError
        If the directory holds no parquet or csv file.
    """
    data_dir = Path(data_dir)
    files = sorted(data_dir.glob("*.parquet")) or sorted(data_dir.glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"{data_dir}: no *.parquet or *.csv file (UCI Online Retail layout)")
    t, report = clean_retail(read_retail_table(files[0]), cleaning)
    inv = np.asarray(t["InvoiceNo"].to_numpy(zero_copy_only=False), dtype=str)
    item = np.asarray(t["StockCode"].to_numpy(zero_copy_only=False), dtype=str)
    ts = pc.cast(t["InvoiceDate"], "int64").to_numpy(zero_copy_only=False) / 1e6
    cust_f = t["CustomerID"].to_numpy(zero_copy_only=False).astype(np.float64)
    cust = np.where(np.isnan(cust_f), np.char.add("guest-", inv), np.nan_to_num(cust_f).astype(np.int64).astype(str))
    uniq, inv_code, counts = np.unique(item, return_inverse=True, return_counts=True)
    keep = counts[inv_code] >= min_item_support
    inv, item, ts, cust = inv[keep], item[keep], ts[keep], cust[keep]
    u_inv, inv_code, counts = np.unique(inv, return_inverse=True, return_counts=True)
    keep = counts[inv_code] >= 2
    inv, item, ts, cust = inv[keep], item[keep], ts[keep], cust[keep]
    if len(ts) == 0:
        raise ValueError(f"{files[0].name}: no baskets left after cleaning, dropping items with < "
                         f"{min_item_support} lines and baskets with < 2 lines")
    is_test = ts >= ts.max() - test_days * _DAY_S
    log, _ = encode_train(inv[~is_test], item[~is_test], ts[~is_test], user_keys=cust[~is_test])
    task, dropped = encode_test(log.item_ids or (), inv[is_test], item[is_test], ts[is_test])
    return Dataset(name=data_dir.name, train=log, test=task, n_dropped_test=dropped, cleaning=report)
