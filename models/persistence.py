"""A saved model is a directory: ``arrays.npz`` (no pickles) plus ``params.json`` (class, version, params)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from models.errors import ModelFormatError

__all__ = ["FORMAT_VERSION", "save_model_dir", "load_model_dir", "construct_saved"]

FORMAT_VERSION = 1
"""Version written into ``params.json``; ``load_model_dir`` refuses any other."""


def save_model_dir(path: Path, model_name: str, params: dict[str, object], arrays: dict[str, NDArray]) -> None:
    """Write ``arrays`` to ``path/arrays.npz`` and ``{class, version, params}`` to ``path/params.json``.

    Parameters
    ----------
    path : Path
        Directory; created if missing, files inside overwritten.
    model_name : str
        Class name, checked on load.
    params : dict
        JSON-serialisable hyper-parameters (what ``__init__`` takes).
    arrays : dict of str to ndarray
        Learned state; numeric dtypes only.

    Raises
    ------
    ValueError
        If an array has dtype object (it would need pickle).
    """
    for key, arr in arrays.items():
        if np.asarray(arr).dtype == object:
            raise ValueError(f"{model_name}.save: array {key!r} has dtype object; only numeric arrays are saved")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    np.savez(path / "arrays.npz", **{k: np.asarray(v) for k, v in arrays.items()})
    meta = {"class": model_name, "version": FORMAT_VERSION, "params": params}
    (path / "params.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


def load_model_dir(path: Path, model_name: str) -> tuple[dict[str, object], dict[str, NDArray]]:
    """Read what :func:`save_model_dir` wrote, with ``allow_pickle=False``.

    Returns
    -------
    (params, arrays)

    Raises
    ------
    ModelFormatError
        If a file is missing, ``params.json`` is not a JSON object with an object ``params``
        (truncated, empty, not UTF-8), the class or version differ, or the npz is unreadable
        (truncated); the message names the path and what was found.
    """
    path = Path(path)
    meta_path, arr_path = path / "params.json", path / "arrays.npz"
    if not meta_path.exists() or not arr_path.exists():
        raise ModelFormatError(f"{path}: a saved {model_name} needs params.json and arrays.npz; "
                               f"found {sorted(p.name for p in path.iterdir()) if path.is_dir() else 'no directory'}")
    try:  # a truncated, emptied or hand-broken file is a bad model directory, not a JSON traceback
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{meta_path}: unreadable ({exc})") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("params", {}), dict):
        raise ModelFormatError(f"{meta_path}: expected an object {{class, version, params: {{...}}}}; "
                               f"got {json.dumps(meta)[:80]}")
    if meta.get("class") != model_name:
        raise ModelFormatError(f"{meta_path}: class must be {model_name!r}; got {meta.get('class')!r}")
    if meta.get("version") != FORMAT_VERSION:
        raise ModelFormatError(f"{meta_path}: version must be {FORMAT_VERSION}; got {meta.get('version')!r}")
    try:
        with np.load(arr_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:  # a truncated npz is a BadZipFile
        raise ModelFormatError(f"{arr_path}: unreadable ({exc})") from exc
    return dict(meta.get("params", {})), arrays


_M = TypeVar("_M")


def construct_saved(make: Callable[..., _M], params: object, path: Path, *args: object) -> _M:
    """``make(*args, **params)`` for a saved model directory's parameters.

    Raises
    ------
    ModelFormatError
        If ``params`` is not an object, or the constructor refuses it (an unknown parameter hand-added to
        ``params.json``, a value of the wrong kind or out of range: ``TypeError`` / ``ValueError``); the message
        names ``path/params.json``. The trainer replaces an unreadable champion only on this error.
    """
    if not isinstance(params, dict):
        raise ModelFormatError(f"{Path(path) / 'params.json'}: params must be an object; got {json.dumps(params)[:80]}")
    try:
        return make(*args, **params)
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"{Path(path) / 'params.json'}: {exc}") from exc
