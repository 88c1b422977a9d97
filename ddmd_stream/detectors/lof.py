"""Local outlier factor: the points with the largest LOF are the outliers."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.neighbors import LocalOutlierFactor

from ddmd_stream.config import AgentConfig
from ddmd_stream.detectors.base import Detection, Detector, FloatArray, _algorithm, scale_band

logger = logging.getLogger(__name__)


class LOFDetector(Detector):
    """Local outlier factor: the k points with the largest LOF are the outliers.

    k = the number of points with LOF > `threshold`, clamped into the (scaled) band, but never
    a point with LOF <= 1 (as dense as its neighbours). Score = LOF = -negative_outlier_factor_.
    """

    name = "lof"

    def __init__(
        self,
        n_neighbors: int = 20,
        band: tuple[int, int] = (1000, 5000),
        *,
        threshold: float = 1.5,
        algorithm: str = "auto",
        n_jobs: int | None = None,
    ) -> None:
        if n_neighbors < 1:
            raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}")
        self.n_neighbors, self.band, self.threshold = n_neighbors, band, threshold
        self.algorithm, self.n_jobs = algorithm, n_jobs

    @classmethod
    def from_config(cls, config: AgentConfig, n_jobs: int | None = None) -> LOFDetector:
        return cls(config.lof_neighbors, config.outlier_band, n_jobs=n_jobs)

    def _detect(self, x: FloatArray) -> Detection:
        n = len(x)
        low, high = scale_band(self.band, n)
        params = {"n_neighbors": float(min(self.n_neighbors, max(n - 1, 0))),
                  "threshold": self.threshold, "band_low": float(low), "band_high": float(high)}
        if n < 3:
            return Detection.empty(params)
        lof = self._lof(x)
        above = int(np.sum(lof > self.threshold))
        k = min(max(above, low), high, int(np.sum(lof > 1.0 + 1e-9)))
        top = np.argsort(-lof, kind="stable")[:k]
        logger.debug("lof: n=%d above %.2f: %d, reported %d", n, self.threshold, above, k)
        return Detection(top, lof[top], {**params, "n_above_threshold": float(above)})

    def _lof(self, x: FloatArray) -> FloatArray:
        model = LocalOutlierFactor(n_neighbors=min(self.n_neighbors, len(x) - 1),
                                   algorithm=_algorithm(self.algorithm, x.shape[1]),
                                   n_jobs=self.n_jobs)
        return -model.fit(x).negative_outlier_factor_
