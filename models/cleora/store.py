"""Embeddings plus their id index, saved as memory-mappable files with a JSON manifest.

Directory layout (``format_version`` 1)::

    manifest.json      graph, columns, dim, iterations, seed, markov, counts, created, format_version
    vectors.npy        float32 (n, dim), rows L2-normalised (Q_T)
    basis.npy          optional float32 (n, dim): Q_{T-1}, used for inductive vectors
    label_bytes.npy    uint8 (total_utf8_bytes,): the labels' UTF-8 bytes, concatenated
    label_offsets.npy  int64 (n + 1,): label i is label_bytes[offsets[i]:offsets[i + 1]]

``EmbeddingStore.load`` maps the three arrays (``mmap_mode="r"``); nothing is copied until a
label lookup first needs the label → row dictionary, which is then built once per instance.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.cleora.errors import StoreFormatError

__all__ = ["EmbeddingStore", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_FILES = ("manifest.json", "vectors.npy", "label_bytes.npy", "label_offsets.npy")


class EmbeddingStore:
    """Cleora embeddings with their labels.

    Parameters
    ----------
    labels : sequence of str, length n
        Node label of each row.
    vectors : ndarray of shape (n, dim), float32
        May be a read-only memory map.
    manifest : dict
        Provenance (see the module docstring); ``dim`` and counts are checked on load.
    basis : ndarray of shape (n, dim), float32, optional
        ``Q_{T-1}`` for inductive embedding (see ``embed(keep_basis=True)``).

    Raises
    ------
    ValueError
        If ``len(labels) != vectors.shape[0]`` or ``basis`` has another shape than ``vectors``.
    """

    def __init__(self, labels: Sequence[str] | NDArray[np.str_] | None, vectors: NDArray[np.float32],
                 manifest: dict[str, Any], *, basis: NDArray[np.float32] | None = None, _label_bytes: NDArray[np.uint8] | None = None,
                 _label_offsets: NDArray[np.int64] | None = None) -> None:
        n = vectors.shape[0]
        if labels is not None and len(labels) != n:
            raise ValueError(f"labels: {len(labels)} labels for {n} vector rows")
        if basis is not None and basis.shape != vectors.shape:
            raise ValueError(f"basis: shape {basis.shape} differs from vectors {vectors.shape}")
        self.vectors = vectors
        self.basis = basis
        self.manifest = dict(manifest)
        self._label_array = labels if isinstance(labels, np.ndarray) else None  # decoded lazily
        self._labels = None if labels is None or self._label_array is not None else list(labels)
        self._bytes, self._offsets = _label_bytes, _label_offsets
        self._index: dict[str, int] | None = None

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def labels(self) -> list[str]:
        """Labels of the rows (decoded from the mapped bytes on first use)."""
        if self._labels is None and self._label_array is not None:
            self._labels = self._label_array.tolist()
        if self._labels is None:
            raw = bytes(self._bytes) if self._bytes is not None else b""
            off = np.asarray(self._offsets).tolist()
            self._labels = [raw[a:b].decode("utf-8") for a, b in zip(off[:-1], off[1:], strict=True)]
        return self._labels

    @property
    def index(self) -> dict[str, int]:
        """Label → row dictionary, built once."""
        if self._index is None:
            self._index = {s: i for i, s in enumerate(self.labels)}
        return self._index

    def rows_of(self, labels: Sequence[str]) -> NDArray[np.int64]:
        """Row of each label, ``-1`` for unknown labels; shape (len(labels),), int64."""
        get = self.index.get
        return np.fromiter((get(s, -1) for s in labels), dtype=np.int64, count=len(labels))

    def vectors_of(self, labels: Sequence[str]) -> NDArray[np.float32]:
        """Vectors of the labels, zero rows for unknown labels; shape (len(labels), dim), float32."""
        rows = self.rows_of(labels)
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        known = rows >= 0
        out[known] = self.vectors[rows[known]]
        return out

    def save(self, path: Path | str) -> Path:
        """Write the store to directory ``path`` (atomically: a temporary sibling, then a rename).

        Returns
        -------
        Path of the directory. An existing directory at ``path`` is replaced.
        """
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        encoded = [s.encode("utf-8") for s in self.labels]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        np.save(tmp / "vectors.npy", np.ascontiguousarray(self.vectors, dtype=np.float32))
        np.save(tmp / "label_bytes.npy", np.frombuffer(b"".join(encoded), dtype=np.uint8))
        np.save(tmp / "label_offsets.npy", offsets)
        if self.basis is not None:
            np.save(tmp / "basis.npy", np.ascontiguousarray(self.basis, dtype=np.float32))
        manifest = {**self.manifest, "format_version": FORMAT_VERSION, "n_embedded": len(self), "dim": self.dim,
                    "has_basis": self.basis is not None}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path | str, *, mmap: bool = True) -> EmbeddingStore:
        """Open a saved store; with ``mmap=True`` the arrays are read-only memory maps (no copy).

        Raises
        ------
        StoreFormatError
            If a file is missing, the format version is unknown, or the arrays disagree with
            the manifest (the message names the file and both numbers).
        """
        path = Path(path)
        missing = [f for f in _FILES if not (path / f).exists()]
        if missing:
            raise StoreFormatError(f"{path}: missing {', '.join(missing)}")
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except json.JSONDecodeError as exc:
            raise StoreFormatError(f"{path / 'manifest.json'}: not valid JSON ({exc})") from exc
        if manifest.get("format_version") != FORMAT_VERSION:
            raise StoreFormatError(f"{path}: format_version must be {FORMAT_VERSION}; "
                                   f"got {manifest.get('format_version')!r}")
        mode = "r" if mmap else None
        vectors = np.load(path / "vectors.npy", mmap_mode=mode, allow_pickle=False)
        label_bytes = np.load(path / "label_bytes.npy", mmap_mode=mode, allow_pickle=False)
        offsets = np.load(path / "label_offsets.npy", mmap_mode=mode, allow_pickle=False)
        if vectors.ndim != 2 or vectors.dtype != np.float32 or vectors.shape[1] != manifest.get("dim"):
            raise StoreFormatError(f"{path / 'vectors.npy'}: expected float32 (n, dim={manifest.get('dim')}); "
                                   f"got {vectors.dtype} {vectors.shape}")
        if len(offsets) != vectors.shape[0] + 1 or vectors.shape[0] != manifest.get("n_embedded"):
            raise StoreFormatError(f"{path}: {vectors.shape[0]} vectors, {len(offsets) - 1} labels, "
                                   f"manifest n_embedded={manifest.get('n_embedded')}")
        basis = None
        if manifest.get("has_basis"):
            if not (path / "basis.npy").exists():
                raise StoreFormatError(f"{path}: manifest has_basis=true but basis.npy is missing")
            basis = np.load(path / "basis.npy", mmap_mode=mode, allow_pickle=False)
            if basis.shape != vectors.shape:
                raise StoreFormatError(f"{path / 'basis.npy'}: shape {basis.shape} differs from vectors "
                                       f"{vectors.shape}")
        return cls(None, vectors, manifest, basis=basis, _label_bytes=label_bytes, _label_offsets=offsets)
