"""Loader for session-rec's prepared TSV files (``SessionId, ItemId, Time``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from numpy.typing import NDArray

from models.data.encoding import Dataset, encode_test, encode_train

__all__ = ["load_sessionrec", "find_sessionrec_files", "read_events_tsv"]

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
    ``Time``/``timestamp``). Ids stay strings exactly as written.

    Raises
    ------
    ValueError
        If a column is missing (the message names it and lists the header) or the time column
        does not parse as numbers.
    """
    path = Path(path)
    with path.open("r", encoding="utf-8") as fh:
        header = fh.readline().rstrip("\r\n")
    delim = max(("\t", ",", ";"), key=header.count)
    names = header.split(delim)
    norm = [n.strip().lower() for n in names]

    def pick(options: tuple[str, ...], what: str) -> str:
        for o in options:
            if o in norm:
                return names[norm.index(o)]
        raise ValueError(f"{path.name}: no {what} column (looked for {options}); header is {names}")

    s_col, i_col, t_col = pick(_SESSION, "session"), pick(_ITEM, "item"), pick(_TIME, "time")
    types = {n: pa.string() for n in names}
    types[t_col] = pa.float64()
    try:
        table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delim),
                               convert_options=pacsv.ConvertOptions(column_types=types,
                                                                    include_columns=[s_col, i_col, t_col]))
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{path.name}: cannot parse ({exc})") from exc
    ts = table[t_col].to_numpy(zero_copy_only=False).astype(np.float64)
    if ts.size and np.nanmax(ts) > 1e11:
        raise ValueError(f"{path.name}: {t_col} must be epoch seconds; got {np.nanmax(ts):.0f} "
                         f"(looks like milliseconds)")
    return (np.asarray(table[s_col].to_numpy(zero_copy_only=False), dtype=str),
            np.asarray(table[i_col].to_numpy(zero_copy_only=False), dtype=str), ts)


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
    log, _ = encode_train(s, i, t)
    ts_, ti, tt = read_events_tsv(test_path)
    task, dropped = encode_test(log.item_ids or (), ts_, ti, tt)
    return Dataset(name=Path(data_dir).name, train=log, test=task, n_dropped_test=dropped)
