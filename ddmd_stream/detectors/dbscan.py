"""DBSCAN with adaptive eps: noise points are the outliers."""

from __future__ import annotations

import logging
import time

import numpy as np

from ddmd_stream.config import AgentConfig
from ddmd_stream.detectors.base import (
    Detection,
    Detector,
    FloatArray,
    _prepare,
    _reindex,
    _thread_limit,
    scale_band,
)
from ddmd_stream.detectors.neighbours import SlidingNeighbours

logger = logging.getLogger(__name__)


class DBSCANDetector(Detector):
    """DBSCAN noise points (label -1) are the outliers; eps adapts to keep their count in band.

    Exact DBSCAN noise without running DBSCAN. With k = min_samples (the point itself
    included), a point p is core at eps iff its k-distance kd(p) <= eps, and noise iff it is not
    core and no core point lies within eps. A non-core p has fewer than k points within eps, so
    all of them are among its k nearest neighbours N_k(p). Hence p is noise at eps iff

        reach(p) = min over q in N_k(p) of max(kd(q), d(p, q))  >  eps,

    (q = p gives kd(p)). One k-nearest-neighbour search gives kd and reach of every point; the
    noise at any eps is then a comparison, identical to scikit-learn's DBSCAN noise
    (tests/test_detectors.py checks this). Memory is O(n k), whatever eps is. Between cycles
    the neighbours are brought up to date, not searched again (`neighbours.SlidingNeighbours`:
    the window moved on by the frames that arrived). Score of an outlier: its k-distance, the
    smallest eps at which it would be a core point.

    `detect_adaptive` (first cycle, new model) sets eps where the count is the band's geometric
    centre. `update` (between cycles) moves eps slowly, so that what counts as an outlier stays
    stable: too few outliers -> eps /= step, too many -> eps *= step, where the step is
    factor**m after m moves in the same direction. The k-distances bound the useful eps: a step
    down goes no higher than the eps at which fewer than `low` points are non-core, a step up
    no higher than the one at which at most `high` are non-core, and from all-noise a step up
    goes at least to the least k-distance. Once eps has been both too small and too large, the
    next eps lies between the closest such pair: right after a crossing, where log(count + 1),
    linear in log(eps), meets the band's geometric centre (kept within 10-90 % of the bracket);
    after two results on the same side, at the geometric midpoint (bisection). A bracket that a
    newer result contradicts (the data changed) is dropped; a count in band resets all. eps
    stays within [1e-9, 1] x the data diameter.
    """

    name = "dbscan"

    def __init__(
        self,
        eps: float = 0.2,
        min_samples: int = 10,
        band: tuple[int, int] = (1000, 5000),
        factor: float = 1.25,
        *,
        algorithm: str = "auto",
        n_jobs: int | None = None,
    ) -> None:
        if eps <= 0 or min_samples < 1 or factor <= 1:
            raise ValueError("need eps > 0, min_samples >= 1, factor > 1")
        self.eps, self.min_samples, self.band, self.factor = float(eps), min_samples, band, factor
        self.algorithm, self.n_jobs = algorithm, n_jobs
        self._neighbours = SlidingNeighbours(min_samples, algorithm, n_jobs)  # kept between cycles
        self._streak = 0  # +m after m "too many" results in a row, -m after m "too few"
        self._too_small: tuple[float, int] | None = None  # (largest eps, count) with too many
        self._too_large: tuple[float, int] | None = None  # (smallest eps, count) with too few
        self._bounds = (0.0, np.inf)
        self._kd = np.empty(0)  # k-distance of every point of the last data
        self._reach = np.empty(0)  # noise at eps iff reach > eps (see the class docstring)
        self._last_n: int | None = None  # size of the last data; None: no adaptation possible

    @classmethod
    def from_config(cls, config: AgentConfig, n_jobs: int | None = None) -> DBSCANDetector:
        return cls(config.eps, config.dbscan_min_samples, config.outlier_band, config.eps_factor,
                   n_jobs=n_jobs)

    # ----------------------------------------------------------------- detection

    def _detect(self, x: FloatArray) -> Detection:
        return self._detection(len(x)) if self._measure(x) else self._nothing(len(x))

    def detect_adaptive(self, latents: np.ndarray) -> Detection:
        """Like `detect`, with eps set first where the count is the band's geometric centre
        (first cycle, new model); call `update` as after `detect`."""
        x, rows = _prepare(latents)
        with _thread_limit(self.n_jobs):
            if not self._measure(x):
                return _reindex(self._nothing(len(x)), rows)
        if not self.in_band(self.count(self.eps)):
            old = self.eps
            self._set_eps(self._eps_for_band_centre())
            logger.info("dbscan: eps %.4g gives %d outliers (band %s); eps %.4g gives %d", old,
                        self.count(old), scale_band(self.band, len(x)), self.eps,
                        self.count(self.eps))
        return _reindex(self._detection(len(x)), rows)

    def in_band(self, count: int) -> bool:
        """Whether `count` outliers lie in the band scaled to the last data size."""
        low, high = scale_band(self.band, self._last_n or 0)
        return low <= count <= high

    def count(self, eps: float) -> int:
        """DBSCAN's noise count at `eps` on the last data."""
        return int(np.sum(self._reach > eps))

    def _measure(self, x: FloatArray) -> bool:
        """k-distances and reach of every point of `x`; False where DBSCAN cannot judge."""
        n = len(x)
        diameter = float(np.linalg.norm(np.ptp(x, axis=0))) if n else 0.0
        if n < max(self.min_samples, 2) or diameter == 0.0:
            logger.debug("dbscan: %d points (diameter %.3g): nothing to detect", n, diameter)
            self._last_n = None
            return False
        start = time.perf_counter()
        self._last_n = n
        self._kd, self._reach = self._reachability(x)
        self._bounds = (diameter * 1e-9, diameter)
        self._set_eps(self.eps)
        logger.debug("dbscan: k-distances of %d points in %.2f s", n, time.perf_counter() - start)
        return True

    def _reachability(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(kd, reach) per point, from the k = min_samples nearest (self included)."""
        distances, neighbours = self._neighbours.update(x)
        kd = distances.max(axis=1)
        return kd, np.maximum(kd[neighbours], distances).min(axis=1)

    def _eps_for_band_centre(self) -> float:
        """The eps at which (ties aside) the noise count is the band's geometric centre: halfway
        between two reach values, so that no point lies on the boundary."""
        n = self._last_n or 0
        low, high = scale_band(self.band, n)
        target = min(n - 1, max(low, round(np.sqrt((low + 1.0) * (high + 1.0)) - 1.0)))
        if target < 0:
            return self.eps
        reach = np.sort(self._reach)[::-1]
        above = reach[target - 1] if target > 0 else 2.0 * reach[0]
        return float(0.5 * (reach[target] + above))

    def _nothing(self, n: int) -> Detection:
        """No outliers: DBSCAN cannot judge `n` points this degenerate."""
        return Detection.empty(self._params(n, core=n))

    def _detection(self, n: int) -> Detection:
        noise = np.flatnonzero(self._reach > self.eps)
        return Detection(noise, self._kd[noise], self._params(n, int(np.sum(self._kd <= self.eps))))

    def _params(self, n: int, core: int) -> dict[str, float]:
        low, high = scale_band(self.band, n)
        return {"eps": self.eps, "min_samples": float(self.min_samples), "core": float(core),
                "band_low": float(low), "band_high": float(high)}

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
        if count >= (self._last_n or 0) and len(self._kd):
            eps = max(eps, float(self._kd.min()))
        cap = self._noncore_eps(high)
        return min(eps, cap) if cap > self.eps else eps

    def _step_down(self) -> float:
        low = scale_band(self.band, self._last_n or 0)[0]
        return min(self.eps / self.factor ** abs(self._streak), self._noncore_eps(low))

    def _noncore_eps(self, count: int) -> float:
        """eps above which fewer than `count` points are non-core."""
        if count == 0 or len(self._kd) == 0:
            return np.inf
        return float(np.quantile(self._kd, 1.0 - count / (self._last_n or 1)))

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
