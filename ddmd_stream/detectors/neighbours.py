"""Exact k nearest neighbours of a sliding window of points, kept up to date between cycles.

The agent's window moves on by the frames that arrived since the last cycle: the oldest rows
drop out at the front, new ones come at the end, and under the same model the latents of the
rows in between do not change. `SlidingNeighbours.update` finds that shift and, instead of
searching all n points again (n x n distances), searches only what changed:

- a kept point whose k nearest are all kept: its nearest among the new points, merged in;
- a kept point that lost a neighbour, and every new point: a search over all points.

Any other change (another model, other rows) searches everything. Both ways give the same
neighbours (distance ties aside); tests/test_detectors.py checks the two against each other.

A search with `algorithm="auto"` below `KDTREE_BELOW_DIM` latent dimensions uses SciPy's
cKDTree (leaves of `KDTREE_LEAF_SIZE` points), else scikit-learn's brute force. Measured on one
thread, k = 10, the latents of benchmarks/dbscan_noise.py: 80,000 x 10 cKDTree 7.9 s against
brute force 17 s (scikit-learn's kd_tree 13.6 s); 40,000 x 16 cKDTree 5.1 s against brute
4.3 s, so brute force from 16 dimensions on.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.spatial import cKDTree
from sklearn.neighbors import NearestNeighbors

from ddmd_stream.detectors.base import FloatArray, IntArray, _algorithm

logger = logging.getLogger(__name__)

KDTREE_BELOW_DIM = 16  # "auto": SciPy's cKDTree below this many dimensions, brute force from it
KDTREE_LEAF_SIZE = 64  # fastest of 8-512 for 80,000 x 10 latents (7.9 s; 14 s at 8)


class SlidingNeighbours:
    """The k nearest neighbours (each point itself included) of the last points given."""

    def __init__(self, k: int, algorithm: str = "auto", n_jobs: int | None = None) -> None:
        self.k, self.algorithm, self.n_jobs = k, algorithm, n_jobs
        self._points: FloatArray | None = None
        self.distances = np.empty((0, k))
        self.indices = np.empty((0, k), np.int64)

    def update(self, x: FloatArray) -> tuple[FloatArray, IntArray]:
        """(distances, indices), each (n, k), of the k nearest of every row of `x` (n >= k)."""
        shift = self._shift(x)
        if shift is None:
            self.distances, self.indices = self._search(x, x)
        else:
            self._slide(x, shift)
        self._points = x.copy()
        return self.distances, self.indices

    def _shift(self, x: FloatArray) -> int | None:
        """m where `x` is the last points minus their first m plus new rows; None: no such m
        (or fewer than half of them kept, where searching everything costs about as much)."""
        old = self._points
        if old is None or old.shape[1:] != x.shape[1:] or len(x) == 0:
            return None
        for m in np.flatnonzero((old == x[0]).all(axis=1)).tolist():
            kept = len(old) - m
            if kept >= len(old) / 2 and kept <= len(x) and np.array_equal(old[m:], x[:kept]):
                return m
        return None

    def _slide(self, x: FloatArray, m: int) -> None:
        kept = len(self._points) - m
        distances, indices = self.distances[m:], self.indices[m:] - m  # never written in place
        lost = np.flatnonzero((indices < 0).any(axis=1))
        if kept < len(x):
            fresh = x[kept:]
            near, near_index = self._search(x[:kept], fresh)
            distances, indices = _merge(distances, indices, near, near_index + kept, self.k)
        redo = np.concatenate([lost, np.arange(kept, len(x))])
        if len(redo):
            d, i = self._search(x[redo], x)
            distances = np.concatenate([distances, np.empty((len(x) - kept, self.k))])
            indices = np.concatenate([indices, np.empty((len(x) - kept, self.k), np.int64)])
            distances[redo], indices[redo] = d, i
        logger.debug("neighbours: %d dropped, %d new, %d searched again of %d", m,
                     len(x) - kept, len(redo), len(x))
        self.distances, self.indices = distances, indices

    def _search(self, queries: FloatArray, points: FloatArray) -> tuple[FloatArray, IntArray]:
        """The min(k, len(points)) nearest `points` of each query row, nearest first."""
        k = min(self.k, len(points))
        if self.algorithm == "auto" and points.shape[1] < KDTREE_BELOW_DIM:
            tree = cKDTree(points, leafsize=KDTREE_LEAF_SIZE)
            distances, indices = tree.query(queries, k=[*range(1, k + 1)], workers=self.n_jobs or 1)
            return distances, indices.astype(np.int64)
        nn = NearestNeighbors(n_neighbors=k, algorithm=_algorithm(self.algorithm, points.shape[1]),
                              n_jobs=self.n_jobs).fit(points)
        distances, indices = nn.kneighbors(queries)
        return distances, indices.astype(np.int64)


def _merge(distances: FloatArray, indices: IntArray, more: FloatArray, more_indices: IntArray,
           k: int) -> tuple[FloatArray, IntArray]:
    """Per row, the k smallest of two candidate lists."""
    both = np.concatenate([distances, more], axis=1)
    both_indices = np.concatenate([indices, more_indices], axis=1)
    best = np.argpartition(both, k - 1, axis=1)[:, :k]
    return np.take_along_axis(both, best, axis=1), np.take_along_axis(both_indices, best, axis=1)
