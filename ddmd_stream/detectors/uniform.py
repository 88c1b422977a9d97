"""The control that does not steer: "outliers" drawn uniformly from the window."""

from __future__ import annotations

import logging

import numpy as np

from ddmd_stream.config import AgentConfig
from ddmd_stream.detectors.base import Detection, Detector, FloatArray

logger = logging.getLogger(__name__)


class UniformDetector(Detector):
    """`n` frames drawn uniformly at random (without replacement), each with score 0.

    Not a detector of anything: with it the workflow restarts simulations from random past
    frames on the same schedule as steering does, which separates "restarting" from
    "steering" in sampling comparisons (`agent.detector: uniform`)."""

    name = "uniform"

    def __init__(self, n: int, seed: int | None = None) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_config(cls, config: AgentConfig, n_jobs: int | None = None) -> UniformDetector:
        return cls(config.n_outliers, config.seed)

    def _detect(self, x: FloatArray) -> Detection:
        k = min(self.n, len(x))
        chosen = np.sort(self.rng.choice(len(x), size=k, replace=False))
        logger.debug("uniform: %d of %d frames", k, len(x))
        return Detection(chosen, np.zeros(k), {"drawn": float(k)})
