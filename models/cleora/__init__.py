"""Cleora graph embeddings: graphs from hyperedges and events, fast propagation, inductive vectors, stores.

Example::

    from models.cleora import build_graph, embed, embed_new_nodes
    g = build_graph([["a", "b", "c"], ["b", "d"]], "complex::reflexive::item")
    store = embed(g, dim=256, n_iter=4)            # EmbeddingStore: labels, vectors, manifest
    store.save("out/cleora-item")                  # memory-mappable files + manifest.json
    v = embed_new_nodes([["a", "d"]], store)       # (1, 256) float32, for nodes seen later
"""

from models.cleora.columns import Column, parse_columns
from models.cleora.embed import embed
from models.cleora.errors import EmptyGraphError, GraphInputError, StoreFormatError
from models.cleora.graph import Graph, build_graph, graph_from_arrays
from models.cleora.hashing import hash_init, label_keys
from models.cleora.inductive import embed_new_nodes, embed_new_nodes_csr
from models.cleora.propagate import propagate
from models.cleora.sources import read_tsv, rows_from_events, rows_from_titles
from models.cleora.store import EmbeddingStore

__all__ = [
    "Column", "parse_columns", "embed", "EmptyGraphError", "GraphInputError", "StoreFormatError",
    "Graph", "build_graph", "graph_from_arrays", "hash_init", "label_keys", "embed_new_nodes",
    "embed_new_nodes_csr", "propagate", "read_tsv", "rows_from_events", "rows_from_titles", "EmbeddingStore",
]
