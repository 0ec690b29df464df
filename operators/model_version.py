"""Versioned model directories: write, find the newest, load, and hot-swap while running.

Layout of ``model_dir``::

    model_dir/
      LATEST                      text: name of the newest complete version
      20261129T163000Z-3f2a/      one version (immutable once LATEST points at it)
        manifest.json             {"version", "model_class", "created", "n_items", ...}
        item_ids.json             shop item id of each item_idx (list of str)
        item_vectors.npy          optional: Cleora item embeddings, row = item_idx (for M′·Q)
        model/                    the recommender's own save() directory

A version is written to a temporary directory, renamed into place, then ``LATEST`` is replaced
atomically, so readers never see half a version.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.base import Recommender
from operators.id_index import IdIndex
from operators.topic_table import release_free_heap

__all__ = ["ModelVersion", "write_version", "latest_version_path", "load_version", "ModelWatcher", "point_latest",
           "PROMOTIONS"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelVersion:
    """A loaded model version: the recommender and its item id <-> item_idx mapping."""

    version: str
    model: Recommender
    item_ids: list[str]
    manifest: dict[str, Any]
    item_index: Mapping[str, int] = field(default_factory=dict)
    """item_id -> item_idx; by default an ``IdIndex`` over ``item_ids`` (flat arrays: ~17 MB at 1M items, where a
    dict took ~60); a version that repeats an id is refused (ValueError)."""
    item_vectors: NDArray[np.float32] | None = None
    """Cleora item embeddings (n_items, dim) float32, row = item_idx, memory-mapped; for M′·Q."""
    root_item_ids: list[str] | None = None
    """For a version the catalog overlay extended with new items: the ``item_ids`` of the version it extends,
    the first ``len(root_item_ids)`` of its own (the API's ``IdBridge`` keeps one table per root); None otherwise."""

    def __post_init__(self) -> None:
        if not self.item_index:
            object.__setattr__(self, "item_index", IdIndex(self.item_ids))


def _class_path(model: object) -> str:
    return f"{type(model).__module__}:{type(model).__qualname__}"


PROMOTIONS = "promotions.jsonl"
"""Append-only log under ``model_dir``: one JSON line per change of ``LATEST`` (action, version, reason)."""


def point_latest(model_dir: Path, version: str, *, action: str = "promote", reason: str = "") -> None:
    """Replace ``model_dir/LATEST`` atomically with ``version`` (readers see the old or the new name)
    and append the change to ``model_dir/promotions.jsonl``.

    Raises
    ------
    FileNotFoundError
        If ``version`` is not the name of a complete version directory under ``model_dir`` (a path such as
        ``v1/../v2`` is not a name).
    """
    model_dir = Path(model_dir)
    if Path(version).name != version or version in ("", ".", ".."):  # "v1/../v2", "../elsewhere/v": not under model_dir
        raise FileNotFoundError(f"{version!r}: not a version name (one directory under {model_dir})")
    if not (model_dir / version / "manifest.json").exists():
        raise FileNotFoundError(f"{model_dir / version}: not a complete model version")
    latest_tmp = model_dir / f".LATEST-{version}"
    latest_tmp.write_text(version)
    os.replace(latest_tmp, model_dir / "LATEST")
    with open(model_dir / PROMOTIONS, "a") as f:
        f.write(json.dumps({"ts": time.time(), "action": action, "version": version, "reason": reason}) + "\n")
    log.info("LATEST -> %s (%s%s)", version, action, f": {reason}" if reason else "")


def write_version(model_dir: Path, model: Recommender, item_ids: list[str], *,
                  item_vectors: NDArray[np.float32] | None = None, promote: bool = True, **manifest: Any) -> Path:
    """Save ``model`` (and optional Cleora ``item_vectors``, one row per item) as a new version
    under ``model_dir`` and, when ``promote``, point ``LATEST`` at it (a gated challenger is
    written with ``promote=False`` and pointed at only if it passes)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]
    tmp = model_dir / f".tmp-{version}"
    tmp.mkdir()
    model.save(tmp / "model")
    (tmp / "item_ids.json").write_text(json.dumps(item_ids))
    if item_vectors is not None:
        if item_vectors.shape[0] != len(item_ids):
            raise ValueError(f"item_vectors has {item_vectors.shape[0]} rows for {len(item_ids)} items")
        np.save(tmp / "item_vectors.npy", np.ascontiguousarray(item_vectors, dtype=np.float32))
    (tmp / "manifest.json").write_text(json.dumps({
        "version": version, "model_class": _class_path(model), "created": time.time(),
        "n_items": len(item_ids), **manifest}, indent=2))
    final = model_dir / version
    os.rename(tmp, final)
    if promote:
        point_latest(model_dir, version)
    log.info("wrote model version %s%s", final, "" if promote else " (LATEST not moved)")
    return final


def latest_version_path(model_dir: Path) -> Path | None:
    """Directory of the newest complete version, or ``None`` when there is none."""
    pointer = Path(model_dir) / "LATEST"
    if not pointer.exists():
        return None
    path = Path(model_dir) / pointer.read_text().strip()
    return path if (path / "manifest.json").exists() else None


def load_version(path: Path, intern_ids: Callable[[list[str]], object] | None = None) -> ModelVersion:
    """Load one version directory.

    ``intern_ids``: called with the version's item ids as soon as they are read, before the model itself loads
    (``ModelWatcher``'s): ids it replaces by equal strings (the catalog's) are freed before the model's arrays
    are read, not beside them (~56 MB of strings at 1M items; bench/RESULTS.md, issue 14 session 28).

    Raises
    ------
    ValueError
        If the manifest names a class outside ``models``.
    """
    path = Path(path)
    manifest = json.loads((path / "manifest.json").read_text())
    module, _, qualname = manifest["model_class"].partition(":")
    if not module.startswith("models."):
        raise ValueError(f"model_class must live in models/; got {manifest['model_class']!r}")
    cls = getattr(importlib.import_module(module), qualname)
    item_ids = json.loads((path / "item_ids.json").read_text())
    if intern_ids is not None:
        intern_ids(item_ids)
    model = cls.load(path / "model")
    vec_path = path / "item_vectors.npy"
    vectors = np.load(vec_path, mmap_mode="r", allow_pickle=False) if vec_path.exists() else None
    return ModelVersion(version=manifest["version"], model=model, item_ids=item_ids, manifest=manifest,
                        item_vectors=vectors)


_RETRY_FAILED_S = 30.0


class ModelWatcher:
    """Holds the current version and swaps in a newer one when ``LATEST`` changes.

    ``current()`` checks the pointer at most every ``check_every_s`` seconds; a failed load
    keeps the old version and logs the error; a version that failed is tried again after
    30 s (not at every check), or at once when ``LATEST`` names another one.

    ``intern_ids``: called at each check with the current version's ``item_ids`` until it returns True;
    it may replace ids, in place, by equal strings (the API's ``CatalogView.intern_ids``: the catalog's
    own, so a 1M-item version's ids do not cost ~56 MB of their own). Equal strings: every answer stays.
    """

    def __init__(self, model_dir: Path, check_every_s: float = 2.0,
                 intern_ids: Callable[[list[str]], bool] | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.check_every_s = check_every_s
        self.intern_ids = intern_ids
        self._interned = False  # intern_ids has returned True for the current version
        self._current: ModelVersion | None = None
        self._checked = 0.0
        self._unloadable: tuple[str, float] | None = None  # the version that failed to load, and when
        self.load_error: str | None = None  # why the version LATEST names is not the one served (None: it is)

    def current(self) -> ModelVersion | None:
        now = time.monotonic()
        if now - self._checked >= self.check_every_s or self._current is None and self._checked == 0.0:
            self._checked = now
            path = latest_version_path(self.model_dir)
            failed_recently = (path is not None and self._unloadable is not None
                               and self._unloadable[0] == path.name and now - self._unloadable[1] < _RETRY_FAILED_S)
            if (path is not None and not failed_recently
                    and (self._current is None or self._current.version != path.name)):
                interned: list[bool] = []  # intern_ids's answer, asked as the ids are read (before the model loads)
                intern = self.intern_ids
                try:
                    self._current = (load_version(path) if intern is None
                                     else load_version(path, intern_ids=lambda ids: interned.append(intern(ids))))
                    self._interned = bool(interned and interned[-1])
                    release_free_heap()  # the load's temporaries (an npz of 160 MB at 1M items is read whole, then copied)
                    log.info("loaded model version %s", path.name)
                except Exception as exc:  # keep serving the old version; the error is logged
                    self._unloadable = (path.name, now)
                    self.load_error = f"model version {path.name} cannot be loaded: {type(exc).__name__}: {exc}"
                    log.exception("cannot load model version %s (tried again in %.0f s)", path, _RETRY_FAILED_S)
                else:
                    self._unloadable = self.load_error = None
            if self._current is not None and self.intern_ids is not None and not self._interned:
                self._interned = self.intern_ids(self._current.item_ids)
        return self._current
