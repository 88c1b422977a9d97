"""A model-free embedding of frames, for cycles where a model's latents cannot tell them apart.

Early in a run a model may map every frame to one point (an encoder that has not learned yet,
or one that collapsed). No detector can find outliers in one point, and the simulations would
then never be steered. `input_embedding` projects the model's input itself (contact maps or
point clouds, flattened) onto its leading principal components, where the detector runs instead.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.decomposition import PCA

from ddmd_stream.detectors.base import FloatArray

logger = logging.getLogger(__name__)

DIMENSIONS = 10  # principal components kept (the CVAE's default latent size)


def has_spread(latents: np.ndarray) -> bool:
    """Whether at least two finite latents differ (else no detector can judge them)."""
    x = np.asarray(latents, dtype=np.float64).reshape(len(latents), -1)
    x = x[np.isfinite(x).all(axis=1)]
    return len(x) >= 2 and bool(np.ptp(x, axis=0).max() > 0)


def input_embedding(inputs: np.ndarray, dimensions: int = DIMENSIONS) -> FloatArray:
    """(n, ...) model inputs -> (n, k) principal-component scores, k <= `dimensions`."""
    x = np.asarray(inputs, dtype=np.float64).reshape(len(inputs), -1)
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    k = min(dimensions, len(x) - 1, x.shape[1])
    if k < 1 or not has_spread(x):
        return np.zeros((len(x), 1))
    return PCA(n_components=k, svd_solver="randomized", random_state=0).fit_transform(x)
