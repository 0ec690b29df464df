"""Loader for SR-GNN-style pickles (``all_train_seq.txt``, ``test.txt``, ``test_time.txt``).

These public dataset files are Python pickles of plain lists and tuples of ints. They are read
with :class:`_PlainUnpickler`, which refuses every global (class or function) reference, so a
file can only ever produce lists, tuples, ints, floats and strings; pickle is used for nothing
else in ``models/``.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from models.data.encoding import Dataset, encode_train, lookup_items
from models.data.task import NextItemTask, pairs_task

__all__ = ["load_srgnn", "read_plain_pickle", "PickleReadError", "sessions_from_pairs", "SESSION_SECONDS"]

SESSION_SECONDS = 60.0
"""Pseudo-time: these files carry no train timestamps, so train session ``s`` is placed at
``s * SESSION_SECONDS`` epoch seconds (events 0.01 s apart) and every test prefix just after
the last train session; time decays (STAN's ``lambda_snh``) then count in sessions and should
be tuned on the validation split."""


class _PlainUnpickler(pickle.Unpickler):
    """An unpickler that builds only built-in containers and scalars (no globals at all)."""

    def find_class(self, module: str, name: str) -> object:
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only plain lists/tuples allowed")


def read_plain_pickle(path: Path) -> object:
    """Load a pickle that may hold only lists, tuples, dicts, ints, floats and strings.

    Raises
    ------
    PickleReadError
        (an ``UnpicklingError`` and a ``ValueError``) if the file is not a readable pickle or
        references any class or function; the message is ``cannot read <file>: ...``.
    """
    data = Path(path).read_bytes()
    try:
        return _PlainUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            OverflowError, MemoryError, UnicodeDecodeError) as exc:  # what a corrupt pickle can raise
        raise PickleReadError(f"cannot read {path}: {exc}") from exc


class PickleReadError(pickle.UnpicklingError, ValueError):
    """A dataset pickle that is corrupt or names a global (a ``ValueError``: bad input data)."""


def _check_pairs(obj: object, path: Path, *, timed: bool = False) -> tuple[list[list[int]], list[int]]:
    """``(prefixes, targets)`` of item ints; ``timed``: elements are ``(item, unix_seconds)`` (test_time.txt)."""
    if not (isinstance(obj, tuple | list) and len(obj) == 2 and all(isinstance(x, tuple | list) for x in obj)
            and len(obj[0]) == len(obj[1])):
        raise ValueError(f"{path.name}: expected a pair (prefixes, targets) of equal length")
    prefixes = _sessions(obj[0], path, "prefix", timed=timed)
    targets = [_item(t, path, f"target {q}", timed=timed) for q, t in enumerate(obj[1])]
    return prefixes, targets


def _sessions(obj: list | tuple, path: Path, what: str, *, timed: bool = False) -> list[list[int]]:
    """Each element of ``obj`` as a list of item ints; a malformed one is a ValueError naming the file and where."""
    out = []
    for q, seq in enumerate(obj):
        if not isinstance(seq, tuple | list):
            raise ValueError(f"{path.name}: {what} {q} must be a list of item ids; got {seq!r:.60}")
        out.append([_item(e, path, f"{what} {q}, position {j}", timed=timed) for j, e in enumerate(seq)])
    return out


def _item(value: object, path: Path, where: str, *, timed: bool = False) -> int:
    """An item id as an int (an int, an integral float or a string of digits); else a ValueError naming it."""
    if type(value) is int:  # the common case, first: datasets hold millions
        return value
    if timed and isinstance(value, tuple | list) and value:  # test_time.txt: (item, unix_seconds)
        value = value[0]
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TypeError
        item = int(value)
        if isinstance(value, float) and item != value:  # 2.7 would silently become item 2
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{path.name}: {where}: an item id must be an integer; got {value!r:.60}") from None
    return item


def load_srgnn(data_dir: Path) -> Dataset:
    """Load an SR-GNN-style directory as (train log, given (prefix, next) pairs).

    Parameters
    ----------
    data_dir : Path
        Holds ``all_train_seq.txt`` (list of item-id lists, one per train session, in time
        order; or SR-GNN's prefix-expanded ``train.txt``, from which the sessions are rebuilt)
        and ``test.txt`` (``(prefixes, targets)``); ``test_time.txt`` (the same pairs with
        ``(item, unix_seconds)`` elements) is used when ``test.txt`` is absent.

    Returns
    -------
    Dataset whose test task has one query per pair. Items are strings of the original ints.
    Prefix items unseen in train are dropped, and pairs whose target is unseen or whose
    prefix becomes empty are dropped (counted in ``n_dropped_test``), as session-rec drops
    unknown test items. Timestamps are pseudo-times (see ``SESSION_SECONDS``).

    Raises
    ------
    FileNotFoundError
        If both train files or both test files are missing.

    References
    ----------
    Wu et al., "Session-based Recommendation with Graph Neural Networks", AAAI 2019
    (github.com/CRIPAC-DIG/SR-GNN, ``datasets/preprocess.py``).
    """
    data_dir = Path(data_dir)
    seqs = _read_train_sessions(data_dir)
    lens = np.array([len(s) for s in seqs], dtype=np.int64)
    if not lens.sum():
        raise ValueError(f"{data_dir}: the training sessions (all_train_seq.txt or train.txt) hold no items")
    items = np.array([str(int(i)) for s in seqs for i in s])
    sess = np.repeat(np.arange(len(seqs), dtype=np.int64), lens)
    pos = np.arange(len(items)) - np.repeat(np.cumsum(lens) - lens, lens)
    ts = sess * SESSION_SECONDS + pos * 0.01
    log, _ = encode_train(sess, items, ts.astype(np.float64))
    prefixes, targets = _read_test(data_dir)
    task, dropped = _pairs_in_catalogue(log.item_ids or (), prefixes, targets, now=len(seqs) * SESSION_SECONDS)
    return Dataset(name=data_dir.name, train=log, test=task, n_dropped_test=dropped)


def _read_train_sessions(data_dir: Path) -> list[list[int]]:
    """Train sessions from ``all_train_seq.txt``, else rebuilt from SR-GNN's expanded ``train.txt``."""
    path = data_dir / "all_train_seq.txt"
    if path.exists():
        seqs = read_plain_pickle(path)
        if not isinstance(seqs, list):
            raise ValueError(f"{path.name}: expected a list of sessions; got {type(seqs).__name__}")
        return _sessions(seqs, path, "session")
    path = data_dir / "train.txt"
    if not path.exists():
        raise FileNotFoundError(f"{data_dir}: no all_train_seq.txt or train.txt (SR-GNN layout)")
    return sessions_from_pairs(*_check_pairs(read_plain_pickle(path), path))


def sessions_from_pairs(prefixes: list, targets: list) -> list[list[int]]:
    """Undo SR-GNN's prefix expansion: ``(s[:-1], s[-1]), (s[:-2], s[-2]), ...`` -> ``s``.

    A pair continues the current session when ``prefix + [target]`` is one item shorter than
    the previous pair's and a prefix of the session; any other pair starts a new session (its
    ``prefix + [target]`` is the full session).
    """
    seqs: list[list[int]] = []
    current: list[int] = []
    last_len = 0
    for p, t in zip(prefixes, targets, strict=True):
        full = [*p, t]
        if len(full) == last_len - 1 and current[: len(full)] == full:
            last_len = len(full)
            continue
        current, last_len = full, len(full)
        seqs.append(full)
    return seqs


def _read_test(data_dir: Path) -> tuple[list, list]:
    """(prefixes, targets) of item ints from ``test.txt`` or ``test_time.txt``."""
    path = data_dir / "test.txt"
    if path.exists():
        return _check_pairs(read_plain_pickle(path), path)
    path = data_dir / "test_time.txt"
    if path.exists():
        return _check_pairs(read_plain_pickle(path), path, timed=True)
    raise FileNotFoundError(f"{data_dir}: no test.txt or test_time.txt (SR-GNN layout)")


def _pairs_in_catalogue(item_ids: tuple[str, ...], prefixes: list, targets: list,
                        now: float) -> tuple[NextItemTask, int]:
    """Map pairs to train indices; drop unknown prefix items and pairs that become unusable."""
    lens = np.array([len(p) for p in prefixes], dtype=np.int64)
    flat = lookup_items(item_ids, np.array([str(int(i)) for p in prefixes for i in p]))
    tgt = lookup_items(item_ids, np.array([str(int(t)) for t in targets]))
    bounds = np.concatenate([[0], np.cumsum(lens)])
    new_pre, new_tgt = [], []
    for q in range(len(targets)):
        p = flat[bounds[q]:bounds[q + 1]]
        p = p[p >= 0]
        if tgt[q] >= 0 and len(p):
            new_pre.append(p.tolist())
            new_tgt.append(int(tgt[q]))
    ts = [[now + 0.01 * j for j in range(len(p) + 1)] for p in new_pre]
    ids = tuple(str(q) for q in range(len(new_tgt)))
    return pairs_task(new_pre, new_tgt, ts, ids), len(targets) - len(new_tgt)
