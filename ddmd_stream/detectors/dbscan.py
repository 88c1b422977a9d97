"""DBSCAN with adaptive eps: noise points are the outliers."""

from __future__ import annotations

import logging
import time

import numpy as np
from sklearn.cluster import DBSCAN
from sklearn.neighbors import NearestNeighbors

from ddmd_stream.config import AgentConfig
from ddmd_stream.detectors.base import (
    Detection,
    Detector,
    FloatArray,
    IntArray,
    _algorithm,
    _prepare,
    _reindex,
    _thread_limit,
    scale_band,
)

logger = logging.getLogger(__name__)


class DBSCANDetector(Detector):
    """DBSCAN noise points (label -1) are the outliers; eps adapts to keep their count in band.

    Score of an outlier: its k-distance (k = min_samples, the point itself included), i.e. the
    smallest eps at which it would be a core point; always > eps for noise.

    Adaptation (`update`): too few outliers -> eps /= step, too many -> eps *= step, where the
    step is factor**m after m moves in the same direction (fast when far off). Noise points are
    never core points, so the k-distances of up to 500 sampled points bound the useful eps: an
    eps at which fewer than `low` points are non-core gives too few outliers, one at which at most
    `high` are non-core gives no more than `high`. So a step down goes no higher than the former
    (skipping a plateau of a few isolated points), a step up no higher than the latter (no futile
    overshoot), and from all-noise a step up goes at least to the least sampled k-distance.
    Once eps has been both too small and too large, the next eps lies between the closest such
    pair: right after a crossing, where log(count + 1), linear in log(eps), meets the band's
    geometric centre (kept within 10-90 % of the bracket); after two results on the same side,
    at the geometric midpoint (bisection), so the bracket keeps shrinking. A bracket that a newer
    result contradicts (the data changed) is dropped; a count in band resets all. eps stays
    within [1e-9, 1] x the data diameter and, for more than `max_neighbors` points, below the
    radius at which the median sampled point has `max_neighbors` neighbours (DBSCAN holds every
    neighbourhood in memory: a far too large eps on 80,000 points would need tens of GB).
    """

    name = "dbscan"
    SAMPLE = 500  # points sampled for the k-distance and neighbourhood statistics

    def __init__(
        self,
        eps: float = 0.2,
        min_samples: int = 10,
        band: tuple[int, int] = (1000, 5000),
        factor: float = 1.25,
        *,
        max_neighbors: int = 1000,
        algorithm: str = "auto",
        n_jobs: int | None = None,
    ) -> None:
        if eps <= 0 or min_samples < 1 or factor <= 1 or max_neighbors < 1:
            raise ValueError("need eps > 0, min_samples >= 1, factor > 1, max_neighbors >= 1")
        self.eps, self.min_samples, self.band, self.factor = float(eps), min_samples, band, factor
        self.max_neighbors, self.algorithm, self.n_jobs = max_neighbors, algorithm, n_jobs
        self._streak = 0  # +m after m "too many" results in a row, -m after m "too few"
        self._too_small: tuple[float, int] | None = None  # (largest eps, count) with too many
        self._too_large: tuple[float, int] | None = None  # (smallest eps, count) with too few
        self._bounds = (0.0, np.inf)
        self._k_distances = np.empty(0)  # sorted k-distances of sampled points
        self._last_n: int | None = None  # size of the last data; None: no adaptation possible

    @classmethod
    def from_config(cls, config: AgentConfig, n_jobs: int | None = None) -> DBSCANDetector:
        return cls(config.eps, config.dbscan_min_samples, config.outlier_band, config.eps_factor,
                   n_jobs=n_jobs)

    # ----------------------------------------------------------------- detection

    def _detect(self, x: FloatArray) -> Detection:
        return self._detection(x, self._labels(x))

    def detect_adaptive(self, latents: np.ndarray, max_tries: int = 8) -> Detection:
        """Like `detect`, retrying with adapted eps until the count is in band (first cycle).

        The search starts from the sampled k-distances (`_guess_eps`), unless the current eps
        already promises a count in band. Updates eps between tries, not after the last one:
        call `update` as after `detect`.
        """
        x, rows = _prepare(latents)
        with _thread_limit(self.n_jobs):
            if not self._measure(x):
                return _reindex(self._detection(x, np.zeros(len(x), np.int64)), rows)
            self._guess_eps()
            labels = self._dbscan(x)
            for _ in range(max_tries - 1):
                count = int(np.sum(labels == -1))
                if self.in_band(count):
                    break
                self.update(count)
                labels = self._dbscan(x)
            return _reindex(self._detection(x, labels), rows)

    def in_band(self, count: int) -> bool:
        """Whether `count` outliers lie in the band scaled to the last data size."""
        low, high = scale_band(self.band, self._last_n or 0)
        return low <= count <= high

    def _labels(self, x: FloatArray) -> IntArray:
        """DBSCAN labels at the (clamped) current eps; all 0 where DBSCAN cannot judge."""
        return self._dbscan(x) if self._measure(x) else np.zeros(len(x), np.int64)

    def _measure(self, x: FloatArray) -> bool:
        """Size, k-distance and eps-bound statistics of `x`; False where DBSCAN cannot judge."""
        n = len(x)
        diameter = float(np.linalg.norm(np.ptp(x, axis=0))) if n else 0.0
        if n < max(self.min_samples, 2) or diameter == 0.0:
            logger.debug("dbscan: %d points (diameter %.3g): nothing to detect", n, diameter)
            self._last_n = None
            return False
        self._last_n = n
        self._k_distances, cap = self._neighbour_stats(x)
        self._bounds = (diameter * 1e-9, min(diameter, cap))
        self._set_eps(self.eps)
        return True

    def _dbscan(self, x: FloatArray) -> IntArray:
        start = time.perf_counter()
        labels = DBSCAN(eps=self.eps, min_samples=self.min_samples, n_jobs=self.n_jobs,
                        algorithm=_algorithm(self.algorithm, x.shape[1])).fit(x).labels_
        logger.debug("dbscan: n=%d eps=%.4g noise=%d clusters=%d (%.2f s)", len(x), self.eps,
                     np.sum(labels == -1), labels.max() + 1, time.perf_counter() - start)
        return labels.astype(np.int64)

    def _guess_eps(self) -> None:
        """eps at which the sampled points predict a count of non-core points in the upper band.

        Noise points are non-core, so the prediction bounds the outlier count from above; border
        points (non-core, but near a core point) make the noise fewer - 40 % of the non-core
        ones in the agent benchmark. Hence the aim: halfway (geometrically) between the band's
        centre and its top. Kept when the current eps already predicts a count in band."""
        n = self._last_n or 0
        low, high = scale_band(self.band, n)
        predicted = float(np.mean(self._k_distances > self.eps)) * n
        if low <= predicted <= high or len(self._k_distances) == 0:
            return
        guess = self._noncore_eps(max(1, round((max(low, 1) * high**3) ** 0.25)))
        old = self.eps
        self._set_eps(guess)
        logger.info("dbscan: eps %.4g predicts %.0f outliers (band %s); starting at %.4g", old,
                    predicted, (low, high), self.eps)

    def _neighbour_stats(self, x: FloatArray) -> tuple[FloatArray, float]:
        """Sorted k-distances of sampled points, and the eps cap from `max_neighbors`."""
        n = len(x)
        rows = np.random.default_rng(0).choice(n, min(n, self.SAMPLE), replace=False)
        kth = [self.min_samples - 1, min(self.max_neighbors, n) - 1]
        norms = np.einsum("ij,ij->i", x, x)
        parts = []
        for chunk in np.array_split(rows, max(1, len(rows) // 50)):
            squared = norms[chunk, None] + norms[None, :] - 2.0 * (x[chunk] @ x.T)
            parts.append(np.partition(squared, sorted(set(kth)), axis=1)[:, kth])
        selected = np.sqrt(np.maximum(np.concatenate(parts), 0.0))
        cap = float(np.median(selected[:, 1])) if n > self.max_neighbors else np.inf
        return np.sort(selected[:, 0]), cap

    def _detection(self, x: FloatArray, labels: IntArray) -> Detection:
        noise = np.flatnonzero(labels == -1)
        low, high = scale_band(self.band, len(x))
        params = {"eps": self.eps, "min_samples": float(self.min_samples),
                  "n_clusters": float(labels.max() + 1) if len(labels) else 0.0,
                  "band_low": float(low), "band_high": float(high)}
        return Detection(noise, self._k_distance(x, noise), params)

    def _k_distance(self, x: FloatArray, rows: IntArray) -> FloatArray:
        if len(rows) == 0:
            return np.empty(0, np.float64)
        nn = NearestNeighbors(n_neighbors=self.min_samples, n_jobs=self.n_jobs,
                              algorithm=_algorithm(self.algorithm, x.shape[1])).fit(x)
        return nn.kneighbors(x[rows])[0][:, -1]

    # ----------------------------------------------------------------- adaptation

    def update(self, n_outliers: int) -> None:
        """Move eps so that the next count moves into the band (see the class docstring)."""
        if self._last_n is None:  # last data was degenerate: the count says nothing about eps
            return
        if self.in_band(n_outliers):
            self._streak, self._too_small, self._too_large = 0, None, None
            return
        too_many = n_outliers > scale_band(self.band, self._last_n)[1]
        self._record(too_many, n_outliers)
        old = self.eps
        self._set_eps(self._next_eps(too_many, n_outliers))
        logger.info("dbscan: %d outliers (band %s): eps %.4g -> %.4g", n_outliers,
                    scale_band(self.band, self._last_n), old, self.eps)

    def _record(self, too_many: bool, count: int) -> None:
        """Remember eps as too small/large; drop a bracket that this result contradicts."""
        if too_many:
            self._too_small = (self.eps, count)
            if self._too_large is not None and self._too_large[0] <= self.eps:
                self._too_large = None
            self._streak = self._streak + 1 if self._streak > 0 else 1
        else:
            self._too_large = (self.eps, count)
            if self._too_small is not None and self._too_small[0] >= self.eps:
                self._too_small = None
            self._streak = self._streak - 1 if self._streak < 0 else -1

    def _next_eps(self, too_many: bool, count: int) -> float:
        small, large = self._too_small, self._too_large
        if small is not None and large is not None:
            if abs(self._streak) > 1:
                return float(np.sqrt(small[0] * large[0]))
            return self._interpolate(small, large)
        return self._step_up(count) if too_many else self._step_down()

    def _step_up(self, count: int) -> float:
        """eps * step, from all-noise at least the least sampled k-distance, capped (see class)."""
        high = scale_band(self.band, self._last_n or 0)[1]
        eps = self.eps * self.factor ** abs(self._streak)
        if count >= (self._last_n or 0) and len(self._k_distances):
            eps = max(eps, float(self._k_distances[0]))
        cap = self._noncore_eps(high)
        return min(eps, cap) if cap > self.eps else eps

    def _step_down(self) -> float:
        low = scale_band(self.band, self._last_n or 0)[0]
        return min(self.eps / self.factor ** abs(self._streak), self._noncore_eps(low))

    def _noncore_eps(self, count: int) -> float:
        """eps above which fewer than `count` points are non-core (sampled k-distances)."""
        if count == 0 or len(self._k_distances) == 0:
            return np.inf
        return float(np.quantile(self._k_distances, 1.0 - count / (self._last_n or 1)))

    def _interpolate(self, small: tuple[float, int], large: tuple[float, int]) -> float:
        """eps between the brackets where log(count + 1) hits the band centre (log-log line)."""
        low, high = scale_band(self.band, self._last_n or 0)
        target = np.log(np.sqrt((low + 1.0) * (high + 1.0)))
        many, few = np.log(small[1] + 1.0), np.log(large[1] + 1.0)
        share = (many - target) / (many - few) if many > few else 0.5
        share = min(max(share, 0.1), 0.9)
        return float(np.exp((1 - share) * np.log(small[0]) + share * np.log(large[0])))

    def _set_eps(self, eps: float) -> None:
        low, high = self._bounds
        clamped = float(min(max(eps, low), high))
        if clamped != eps:
            logger.info("dbscan: eps %.4g clamped to %.4g (data scale/memory bounds)", eps,
                           clamped)
        self.eps = clamped
