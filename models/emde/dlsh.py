"""Density-dependent LSH (DLSH): cut an embedding space into buckets, K times independently.

Each of the ``depth`` partitionings is ``n_bits = log2(width)`` random hyperplanes through
the standardised embeddings; a hyperplane's bias sits at a quantile of the data projected
on it (a random quantile by default, the median as an option), so the cuts follow the
density of the data rather than the origin. An item's code in one partitioning is the
integer whose bits say on which side of each hyperplane it lies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

__all__ = ["DLSHCodebook", "fit_dlsh"]

Quantiles = Literal["random", "median"]


@dataclass(frozen=True)
class DLSHCodebook:
    """A fitted DLSH coder: standardisation, hyperplanes and biases of ``depth`` partitionings.

    Attributes
    ----------
    mean : ndarray of shape (dim,), float32
        Per-feature mean used to standardise embeddings.
    scale : ndarray of shape (dim,), float32
        Per-feature standard deviation (1 where a feature is constant).
    projections : ndarray of shape (depth, dim, n_bits), float32
        Hyperplane normals of each partitioning.
    biases : ndarray of shape (depth, n_bits), float32
        Offset of each hyperplane (a quantile of the projected training data).
    """

    mean: NDArray[np.float32]
    scale: NDArray[np.float32]
    projections: NDArray[np.float32]
    biases: NDArray[np.float32]

    @property
    def depth(self) -> int:
        return int(self.projections.shape[0])

    @property
    def n_bits(self) -> int:
        return int(self.projections.shape[2])

    @property
    def width(self) -> int:
        return 1 << self.n_bits

    def encode(self, x: NDArray[np.floating], *, batch_size: int = 65536) -> NDArray[np.int32]:
        """Bucket of every row in every partitioning.

        Parameters
        ----------
        x : ndarray of shape (n, dim), float
            Embeddings in the space the codebook was fitted on.
        batch_size : int, default 65536
            Rows projected at once (bounds memory to ``batch_size * depth * n_bits`` floats).

        Returns
        -------
        ndarray of shape (n, depth), int32, values in ``[0, width)``.

        Raises
        ------
        ValueError
            If ``x`` is not 2-D with ``dim`` columns (the message gives both numbers).
        """
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"x must have shape (n, {self.mean.shape[0]}); got {x.shape}")
        weights = (1 << np.arange(self.n_bits)).astype(np.int32)
        out = np.empty((x.shape[0], self.depth), dtype=np.int32)
        for start in range(0, x.shape[0], batch_size):
            z = (x[start:start + batch_size].astype(np.float32) - self.mean) / self.scale
            proj = np.einsum("nd,kdb->nkb", z, self.projections, optimize=True)
            out[start:start + batch_size] = (proj > self.biases).astype(np.int32) @ weights
        return out

    def to_arrays(self, prefix: str) -> dict[str, NDArray]:
        """Arrays to store in an ``.npz`` under ``prefix``-qualified names."""
        return {f"{prefix}mean": self.mean, f"{prefix}scale": self.scale,
                f"{prefix}projections": self.projections, f"{prefix}biases": self.biases}

    @classmethod
    def from_arrays(cls, arrays: dict[str, NDArray] | np.lib.npyio.NpzFile, prefix: str) -> DLSHCodebook:
        """Inverse of :meth:`to_arrays`."""
        return cls(*(np.asarray(arrays[f"{prefix}{k}"], dtype=np.float32)
                     for k in ("mean", "scale", "projections", "biases")))


def fit_dlsh(
    x: NDArray[np.floating],
    *,
    depth: int,
    width: int,
    quantiles: Quantiles = "random",
    random_state: int | np.random.Generator | None = None,
) -> DLSHCodebook:
    """Fit ``depth`` density-dependent LSH partitionings of ``width`` buckets on ``x``.

    Parameters
    ----------
    x : ndarray of shape (n, dim), float
        Item embeddings of one modality (any scale: features are standardised first).
    depth : int
        Number of independent partitionings (the official EMDE code used 10-64).
    width : int
        Buckets per partitioning, a power of two (128-256 in the official code).
    quantiles : {"random", "median"}, default "random"
        Where each hyperplane's bias sits along the projected data: at a uniformly drawn
        quantile (finer cuts where data is dense, as in the paper) or at the median
        (every hyperplane halves the data).
    random_state : int, Generator or None
        Seed of the hyperplanes and quantiles.

    Returns
    -------
    DLSHCodebook

    Raises
    ------
    ValueError
        If ``x`` is not 2-D and non-empty, ``width`` is not a power of two >= 2,
        ``depth < 1`` or ``quantiles`` is unknown.

    References
    ----------
    Dąbrowski et al., "An efficient manifold density estimator for all recommendation
    systems", arXiv 2006.01894, section 3 (DLSH).
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x must be a non-empty 2-D array (n, dim); got shape {x.shape}")
    if width < 2 or width & (width - 1):
        raise ValueError(f"width must be a power of two >= 2; got {width}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1; got {depth}")
    if quantiles not in ("random", "median"):
        raise ValueError(f"quantiles must be 'random' or 'median'; got {quantiles!r}")
    rng = np.random.default_rng(random_state)
    n_bits = int(width).bit_length() - 1
    xf = x.astype(np.float32)
    mean = xf.mean(axis=0)
    scale = xf.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0).astype(np.float32)
    projections = rng.standard_normal((depth, x.shape[1], n_bits)).astype(np.float32)
    if quantiles == "random":
        q = rng.uniform(0.0, 1.0, size=(depth, n_bits))
    else:
        q = np.full((depth, n_bits), 0.5)
    sample = xf if len(xf) <= 100_000 else xf[rng.choice(len(xf), 100_000, replace=False)]
    z = (sample - mean) / scale
    biases = np.empty((depth, n_bits), dtype=np.float32)
    for k in range(depth):  # one partitioning at a time bounds memory to (n, n_bits)
        proj = z @ projections[k]
        biases[k] = [np.quantile(proj[:, b], q[k, b]) for b in range(n_bits)]
    return DLSHCodebook(mean=mean.astype(np.float32), scale=scale, projections=projections, biases=biases)
