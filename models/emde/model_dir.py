"""The versioned EMDE model directory: ``params.json`` + ``arrays.npz`` + ``network.npz``.

Layout is documented in :mod:`models.emde.recommender`. Everything is plain arrays and
JSON; loading never unpickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from models.emde.dlsh import DLSHCodebook
from models.emde.layout import SketchLayout
from models.emde.modality import ModalitySpec
from models.emde.network import SketchNetwork
from models.errors import ModelFormatError
from models.persistence import construct_saved

__all__ = ["save_emde", "load_emde", "FORMAT", "VERSION"]

FORMAT = "fusionrec.emde"
VERSION = 1


def save_emde(model: Any, path: Path) -> None:
    """Write a fitted :class:`~models.emde.recommender.EMDE` to directory ``path`` (created)."""
    path.mkdir(parents=True, exist_ok=True)
    params = {
        "format": FORMAT, "version": VERSION, "params": model.get_params(),
        "modalities": [m.to_dict() for m in model.modality_specs_],
        "layout": model.layout_.to_dict(), "n_items": int(model.n_items_),
        "out_blocks": [list(b) for b in model.out_blocks_],
        "train_loss": [float(x) for x in model.train_loss_],
    }
    arrays: dict[str, np.ndarray] = {"item_in_cols": model.item_in_cols_, "item_out_cols": model.item_out_cols_}
    for name, codes in model.codes_.items():
        arrays[f"codes__{name}"] = codes
        book = model.codebooks_.get(name)
        if book is not None:
            arrays.update(book.to_arrays(f"dlsh__{name}__"))
    for name, vec in getattr(model, "graph_vectors_", {}).items():
        arrays[f"graph__{name}"] = vec
    if getattr(model, "item_log_pop_", None) is not None:
        arrays.update(item_log_pop=model.item_log_pop_, bucket_log_prior=model.bucket_log_prior_)
    if model.item_ids_ is not None:
        arrays["item_ids"] = np.asarray(model.item_ids_, dtype=str)
    if model.neighbours_ is not None:
        nb = model.neighbours_
        arrays.update(knn_indptr=nb.indptr, knn_indices=nb.indices, knn_data=nb.data)
    state = {k: v.detach().cpu().numpy() for k, v in model.network_.state_dict().items()}
    np.savez(path / "arrays.npz", **arrays)
    np.savez(path / "network.npz", **state)
    (path / "params.json").write_text(json.dumps(params, indent=1))


def load_emde(cls: type, path: Path) -> Any:
    """Read a directory written by :func:`save_emde` into a new ``cls`` instance.

    Raises
    ------
    ModelFormatError
        If a file is missing, or ``format``/``version`` differ from this code's.
    """
    for f in ("params.json", "arrays.npz", "network.npz"):
        if not (path / f).is_file():
            raise ModelFormatError(f"{path}: missing {f}; not an EMDE model directory")
    try:
        meta = json.loads((path / "params.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # truncated, emptied, not UTF-8
        raise ModelFormatError(f"{path / 'params.json'}: unreadable ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        found = (meta.get("format"), meta.get("version")) if isinstance(meta, dict) else (None, None)
        raise ModelFormatError(f"{path}: expected format {FORMAT!r} version {VERSION}; got "
                               f"{found[0]!r} version {found[1]}")
    try:
        params = dict(meta["params"])
        specs = [ModalitySpec.from_dict(m) for m in meta["modalities"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{path / 'params.json'}: params or modalities: {type(exc).__name__}: {exc}") from exc
    params.pop("modalities", None)
    model = construct_saved(cls, params, path, specs)
    with np.load(path / "arrays.npz", allow_pickle=False) as z:
        model.item_in_cols_ = z["item_in_cols"]
        model.item_out_cols_ = z["item_out_cols"]
        model.codes_ = {m.name: z[f"codes__{m.name}"] for m in specs}
        model.codebooks_ = {m.name: (DLSHCodebook.from_arrays(z, f"dlsh__{m.name}__")
                                     if f"dlsh__{m.name}__mean" in z.files else None) for m in specs}
        model.graph_vectors_ = {m.name: z[f"graph__{m.name}"] for m in specs if f"graph__{m.name}" in z.files}
        model.neighbours_ = (sp.csr_array((z["knn_data"], z["knn_indices"], z["knn_indptr"]),
                                          shape=(len(z["knn_indptr"]) - 1,) * 2)
                             if "knn_indptr" in z.files else None)
        model.item_ids_ = tuple(str(i) for i in z["item_ids"]) if "item_ids" in z.files else None
        has_pop = "item_log_pop" in z.files  # versions written before the popularity decoder: mean readout
        model.item_log_pop_ = z["item_log_pop"] if has_pop else None
        model.bucket_log_prior_ = z["bucket_log_prior"] if has_pop else None
    model.modality_specs_ = tuple(specs)
    model.layout_ = SketchLayout.from_dict(meta["layout"])
    model.out_blocks_ = [tuple(b) for b in meta["out_blocks"]]
    model.n_items_ = int(meta["n_items"])
    model.train_loss_ = meta.get("train_loss", [])
    net = SketchNetwork(model.layout_.input_dim, model.out_blocks_, model.hidden, model.n_layers)
    with np.load(path / "network.npz", allow_pickle=False) as z:
        state = {k: torch.from_numpy(z[k].copy()) for k in z.files}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFormatError(f"{path}: network.npz does not match params.json: {exc}") from exc
    net.eval()
    model.network_ = net
    model._bias_ = None
    return model
