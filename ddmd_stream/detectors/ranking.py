"""Ranking of detected outliers: which of them the agent publishes first."""

from __future__ import annotations

from typing import Literal

import numpy as np

from ddmd_stream.detectors.base import Detection, FloatArray, IntArray

Ranking = Literal["rmsd", "score", "random"]


def rank_outliers(
    detection: Detection,
    rmsd: np.ndarray | None,
    how: Ranking,
    n: int,
    rng: np.random.Generator | int | None = None,
) -> IntArray:
    """Indices (into the detected array) of the top `n` outliers.

    how: "rmsd" - lowest RMSD first (NaN last; ties by score), needs `rmsd` for the whole array;
    "score" - highest score first; "random" - a random subset drawn with `rng` (Generator/seed).
    """
    if n <= 0 or len(detection) == 0:
        return np.empty(0, np.int64)
    if how == "rmsd":
        order = np.lexsort((-detection.scores, _rmsd_of(detection, rmsd)))
    elif how == "score":
        order = np.argsort(-detection.scores, kind="stable")
    elif how == "random":
        order = np.random.default_rng(rng).permutation(len(detection))
    else:
        raise ValueError(f"unknown ranking {how!r}; use 'rmsd', 'score' or 'random'")
    return detection.indices[order[:n]]


def _rmsd_of(detection: Detection, rmsd: np.ndarray | None) -> FloatArray:
    if rmsd is None:
        raise ValueError("ranking by rmsd needs the rmsd array")
    values = np.asarray(rmsd, dtype=np.float64).reshape(-1)
    if detection.indices.max() >= len(values):
        raise ValueError(f"rmsd has {len(values)} values, but an outlier index is "
                         f"{detection.indices.max()}")
    return values[detection.indices]
