"""Dataset loaders: files on disk -> (train ``InteractionLog``, next-item test task, item ids)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from models.data.encoding import Dataset
from models.data.movielens import load_movielens
from models.data.online_retail import load_online_retail
from models.data.sessionrec import load_sessionrec
from models.data.srgnn import load_srgnn
from models.data.task import NextItemTask, expand_sessions, pairs_task
from models.data.validation import validation_split

__all__ = ["Dataset", "NextItemTask", "FORMATS", "load_dataset", "expand_sessions", "pairs_task",
           "validation_split", "load_sessionrec", "load_srgnn", "load_online_retail", "load_movielens"]

FORMATS: dict[str, Callable[[Path], Dataset]] = {
    "sessionrec": load_sessionrec,
    "srgnn": load_srgnn,
    "online_retail": load_online_retail,
    "movielens": load_movielens,
}
"""Format name -> loader; the names ``fusionrec eval --format`` accepts."""


def load_dataset(data_dir: Path, fmt: str) -> Dataset:
    """Load ``data_dir`` with the loader registered for ``fmt``.

    Raises
    ------
    ValueError
        If ``fmt`` is not one of ``FORMATS`` (the message lists them).
    FileNotFoundError
        If the directory does not exist or lacks the format's files.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format: must be one of {sorted(FORMATS)}; got {fmt!r}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data: {data_dir} is not a directory")
    return FORMATS[fmt](data_dir)
