"""Loader for MovieLens ``ratings.csv`` as user histories with a per-user time holdout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from models.data.encoding import Dataset, encode_train, lookup_items
from models.data.task import futures_task, newest_share

__all__ = ["load_movielens"]

_COLUMNS = {"userId": pa.string(), "movieId": pa.string(), "rating": pa.float64(), "timestamp": pa.float64()}


def load_movielens(data_dir: Path, *, holdout_frac: float = 0.2, min_rating: float = 0.0) -> Dataset:
    """Load MovieLens (e.g. latest-small) as user-history top-N data.

    Each user's ratings are sorted by time; the last ``holdout_frac`` of them (at least one)
    are held out. Train holds every user's earlier ratings; the test task has one query per
    user: the train history as prefix, the held-out items as the rest (P@k/R@k/MAP@k on them,
    HR/MRR on the first held-out item). Held-out movies not in train are dropped. Seen items are
    excluded at evaluation (``exclude_seen=True``).

    Parameters
    ----------
    data_dir : Path
        Holds ``ratings.csv`` (``userId,movieId,rating,timestamp``, epoch seconds).
    holdout_frac : float
        Fraction of each user's ratings held out, in (0, 1).
    min_rating : float
        Ratings below this are ignored (0 keeps every rating as an implicit interaction).

    Raises
    ------
    FileNotFoundError
        If ``ratings.csv`` is missing.
    ValueError
        If ``holdout_frac`` is not in (0, 1), or ``ratings.csv`` does not parse, lacks a column,
        holds no rating or an empty or non-finite timestamp (the message names the file).
    """
    if not 0.0 < holdout_frac < 1.0:
        raise ValueError(f"holdout_frac must be in (0, 1); got {holdout_frac}")
    path = Path(data_dir) / "ratings.csv"
    if not path.exists():
        raise FileNotFoundError(f"{data_dir}: no ratings.csv (MovieLens layout)")
    try:
        t = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=_COLUMNS))
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{path}: not a readable MovieLens ratings file: {exc}") from exc
    missing = [c for c in _COLUMNS if c not in t.column_names]
    if missing:  # e.g. a tab-separated file, read as one column
        raise ValueError(f"{path}: MovieLens needs columns {list(_COLUMNS)}; missing {missing} "
                         f"(header is {t.column_names})")
    if not t.num_rows:
        raise ValueError(f"{path}: no ratings (a header only)")
    bad = ~np.isfinite(t["timestamp"].to_numpy(zero_copy_only=False))
    if bad.any():  # an empty or NaN time would be sorted last: silently the user's newest rating
        raise ValueError(f"{path}: timestamp: {int(bad.sum())} values are empty or not finite numbers, "
                         f"e.g. row {int(np.flatnonzero(bad)[0])}")
    for col in ("userId", "movieId"):  # a string column reads an empty field as '': a user or movie whose id is ''
        empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(t[col].fill_null(""))), 0).to_numpy(zero_copy_only=False)
        if empty.any():
            raise ValueError(f"{path}: {col}: {int(empty.sum())} empty ids, e.g. row {int(np.flatnonzero(empty)[0])}")
    user = np.asarray(t["userId"].to_numpy(zero_copy_only=False), dtype=str)
    item = np.asarray(t["movieId"].to_numpy(zero_copy_only=False), dtype=str)
    rating = t["rating"].to_numpy()
    ts = t["timestamp"].to_numpy()
    keep = rating >= min_rating
    user, item, ts = user[keep], item[keep], ts[keep]
    u_ids, u_code = np.unique(user, return_inverse=True)
    order = np.lexsort((ts, u_code))
    user, item, ts, u_code = user[order], item[order], ts[order], u_code[order]
    is_test = newest_share(u_code, holdout_frac)
    log, _ = encode_train(user[~is_test], item[~is_test], ts[~is_test], user_keys=user[~is_test])
    idx = lookup_items(log.item_ids or (), item)
    dropped = int((is_test & (idx < 0)).sum())
    task = futures_task(u_code, idx, ts, is_test, tuple(str(u) for u in u_ids))
    return Dataset(name=Path(data_dir).name, train=log, test=task, exclude_seen=True, n_dropped_test=dropped)
