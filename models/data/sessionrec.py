"""Loader for session-rec's prepared TSV files (``SessionId, ItemId, Time``)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from numpy.typing import NDArray

from models.data.encoding import Dataset, encode_test, encode_train

__all__ = ["load_sessionrec", "find_sessionrec_files", "read_events_tsv"]

log = logging.getLogger(__name__)

_SESSION = ("sessionid", "session", "session_id")
_ITEM = ("itemid", "item", "item_id")
_TIME = ("time", "timestamp", "ts")


def find_sessionrec_files(data_dir: Path, *, validation: bool = False) -> tuple[Path, Path]:
    """The (train, test) files of a session-rec directory.

    Looks for ``*_train_full.txt`` and ``*_test.txt`` (``*_train_tr.txt`` and
    ``*_train_valid.txt`` when ``validation``), then for ``train*`` / ``test*`` files with a
    ``.txt``, ``.tsv`` or ``.csv`` suffix.

    Raises
    ------
    FileNotFoundError
        If no unique pair is found; the message lists the directory's files.
    """
    data_dir = Path(data_dir)
    files = sorted(p for p in data_dir.iterdir() if p.is_file() and p.suffix in (".txt", ".tsv", ".csv"))
    pats = [("_train_tr", "_train_valid")] if validation else [("_train_full", "_test"), ("train", "test")]
    for tr, te in pats:
        trains = [p for p in files if p.stem.endswith(tr)]
        tests = [p for p in files if p.stem.endswith(te)]
        if len(trains) == 1 and len(tests) == 1:
            return trains[0], tests[0]
    raise FileNotFoundError(
        f"{data_dir}: expected one '*_train_full.txt' and one '*_test.txt' (session-rec layout); "
        f"found {[p.name for p in files]}")


def read_events_tsv(path: Path) -> tuple[NDArray, NDArray, NDArray[np.float64]]:
    """Read one session-rec file into (session ids, item ids, epoch seconds).

    The delimiter is sniffed from the header (tab, comma or semicolon); columns are found by
    name, case-insensitively (``SessionId``/``session_id``, ``ItemId``/``item_id``,
    ``Time``/``timestamp``). Ids stay strings exactly as written. Time may be epoch seconds,
    milliseconds or microseconds (detected by magnitude and converted, with a warning) or ISO
    8601 text; without a time column the file order is used (with a warning).

    Raises
    ------
    ValueError
        If the session or item column is missing (the message names it and lists the header),
        holds an empty (or blank) id, or the time column holds empty or unparseable values.
    """
    path = Path(path)
    try:  # utf-8-sig: a spreadsheet's export starts with a byte-order mark, which pyarrow skips too
        with path.open("r", encoding="utf-8-sig", newline="") as fh:
            header = fh.readline().rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path.name}: not UTF-8 text ({exc})") from exc
    delim = max(("\t", ",", ";"), key=header.count)
    names = next(csv.reader([header], delimiter=delim), [""])  # quoted names, as pyarrow reads them
    norm = [n.strip().lower() for n in names]

    def pick(options: tuple[str, ...], what: str) -> str | None:
        for o in options:
            if o in norm:
                return names[norm.index(o)]
        if what == "time":
            return None
        raise ValueError(f"{path.name}: no {what} column (looked for {options}); header is {names}")

    s_col, i_col, t_col = pick(_SESSION, "session"), pick(_ITEM, "item"), pick(_TIME, "time")
    cols = [c for c in (s_col, i_col, t_col) if c is not None]
    try:
        table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delim),
                               convert_options=pacsv.ConvertOptions(
                                   column_types={n: pa.string() for n in names}, include_columns=cols))
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{path.name}: cannot parse ({exc})") from exc
    for col, what in ((s_col, "session"), (i_col, "item")):
        empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(table[col])), 0).to_numpy(zero_copy_only=False)
        if empty.any():  # '5\t\t7' would be an item (or a session) whose id is ''
            raise ValueError(f"{path.name}: {col}: {int(empty.sum())} empty {what} ids, e.g. row "
                             f"{int(np.flatnonzero(empty)[0])}")
    if t_col is None:
        log.warning("%s: no time column (looked for %s); using the file order as time", path.name, _TIME)
        ts = np.arange(table.num_rows, dtype=np.float64)
    else:
        ts = _epoch_seconds(table[t_col], f"{path.name}: {t_col}")
    return (np.asarray(table[s_col].to_numpy(zero_copy_only=False), dtype=str),
            np.asarray(table[i_col].to_numpy(zero_copy_only=False), dtype=str), ts)


def _epoch_seconds(col: pa.ChunkedArray, where: str) -> NDArray[np.float64]:
    """Numbers (s, ms or us by magnitude) or ISO 8601 text -> float64 epoch seconds.

    Raises
    ------
    ValueError
        On empty values, text that is neither a number nor ISO 8601, or NaN / infinite numbers.
    """
    if col.null_count:
        raise ValueError(f"{where}: {col.null_count} empty values")
    try:
        ts = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        try:
            stamps = pc.cast(col, pa.timestamp("us"))
        except pa.ArrowInvalid as exc:
            row, value = _first_bad_time(col)
            raise ValueError(f"{where}: must be epoch seconds or ISO 8601; got {value!r} in row {row}") from exc
        return pc.cast(stamps, pa.int64()).to_numpy(zero_copy_only=False) / 1e6
    bad = ~np.isfinite(ts)
    if bad.any():  # NaN would leave the order of a session's events undefined
        raise ValueError(f"{where}: {int(bad.sum())} values are not finite numbers (NaN or infinity), "
                         f"e.g. row {int(np.flatnonzero(bad)[0])}")
    top = float(np.max(np.abs(ts))) if ts.size else 0.0
    for limit, unit, scale in ((1e14, "microseconds", 1e6), (1e11, "milliseconds", 1e3)):
        if top > limit:
            log.warning("%s: values up to %.0f look like %s; converted to seconds", where, top, unit)
            return ts / scale
    return ts


def _first_bad_time(col: pa.ChunkedArray) -> tuple[int, str]:
    """(row, value) of the first value unlike the first one: not a number when it is one, else not ISO 8601.

    Found by bisection with pyarrow's own casts (about one pass over the column, however long).
    """
    def parses(part: pa.ChunkedArray, kind: pa.DataType) -> bool:
        try:
            pc.cast(part, kind)
        except pa.ArrowInvalid:
            return False
        return True

    kind = pa.float64() if parses(col.slice(0, 1), pa.float64()) else pa.timestamp("us")
    lo, hi = 0, len(col)  # col[lo:hi] holds a value that does not parse as kind
    if parses(col, kind):
        return 0, col[0].as_py()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if parses(col.slice(lo, mid - lo), kind):
            lo = mid
        else:
            hi = mid
    return lo, col[lo].as_py()


def load_sessionrec(data_dir: Path, *, validation: bool = False) -> Dataset:
    """Load a session-rec directory as (train log, next-item test task).

    Parameters
    ----------
    data_dir : Path
        Holds ``<prefix>_train_full.txt`` and ``<prefix>_test.txt`` (TSV, header
        ``SessionId  ItemId  Time``, time in epoch seconds).
    validation : bool
        Load ``<prefix>_train_tr.txt`` / ``<prefix>_train_valid.txt`` instead (session-rec's
        own validation split, for tuning).

    Returns
    -------
    Dataset whose test task holds every position of every test session; test items unseen in
    train are dropped and sessions then shorter than 2 removed, as session-rec does.

    References
    ----------
    Ludewig, Latifi, Jannach, "Empirical analysis of session-based recommendation algorithms",
    UMUAI 2021; github.com/rn5l/session-rec (``evaluation/loader.py``).
    """
    train_path, test_path = find_sessionrec_files(Path(data_dir), validation=validation)
    s, i, t = read_events_tsv(train_path)
    if not len(s):
        raise ValueError(f"{train_path.name}: no events (a header only)")
    log, _ = encode_train(s, i, t)
    ts_, ti, tt = read_events_tsv(test_path)
    task, dropped = encode_test(log.item_ids or (), ts_, ti, tt)
    return Dataset(name=Path(data_dir).name, train=log, test=task, n_dropped_test=dropped)
