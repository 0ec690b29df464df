"""numpy <-> pyroaring conversions on the fast path (pyroaring copies an ``array.array`` in bulk)."""

from __future__ import annotations

import array

import numpy as np
from numpy.typing import NDArray
from pyroaring import BitMap

__all__ = ["bitmap_of", "indices_of"]


def bitmap_of(item_idx: NDArray[np.integer]) -> BitMap:
    """BitMap of the given item_idx (best sorted; any order and duplicates are fine).

    ``BitMap(ndarray)`` iterates in Python (~30 ns an element); going through ``array.array('I')``
    uses pyroaring's bulk add and is 10-25x faster on sorted input.
    """
    values = array.array("I")
    values.frombytes(np.ascontiguousarray(item_idx, dtype=np.uint32).tobytes())
    return BitMap(values)


def indices_of(bitmap: BitMap) -> NDArray[np.int64]:
    """The item_idx of a BitMap as a sorted int64 array."""
    return np.frombuffer(bitmap.to_array(), dtype=np.uint32).astype(np.int64)
