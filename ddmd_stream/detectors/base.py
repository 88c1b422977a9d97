"""The detector interface, and what every detector shares.

A `Detector` turns latents (n, d) into a `Detection`: the indices of the outliers, a score per
outlier (higher = more outlying) and the parameters used. `update(count)` adapts a detector
between agent cycles.

Outlier-count band. `AgentConfig.outlier_band` is the target [low, high] count for a full window;
for small data it is scaled by `scale_band`: low <= 10 % and high <= 50 % of the points (high at
least 1). For 80,000 latents the default band (1000, 5000) is unchanged.

Cost (measured, 80,000 x 10 latents in five Gaussian blobs, eps in band, 2 shared cores):
DBSCAN with kd_tree or ball_tree took 40-45 s, with brute force 11 s; n_jobs=2 saved ~25 % on
the trees. Hence `algorithm="auto"` here means brute force from `BRUTE_FROM_DIM` latent
dimensions on (the 10-nearest-neighbour search that `DBSCANDetector` runs instead of DBSCAN:
brute 17 s, kd_tree 15 s, ball_tree 49 s on one thread; benchmarks/dbscan_noise.py). That
search itself uses SciPy's cKDTree below 16 dimensions (7.9 s; detectors/neighbours.py).
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from ddmd_stream.config import AgentConfig

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

BRUTE_FROM_DIM = 8  # from this many latent dimensions brute force beats the trees (see above)


@dataclass(frozen=True, eq=False)
class Detection:
    """Outliers found in one array of latents (indices into that array)."""

    indices: IntArray
    scores: FloatArray
    params: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        indices = np.asarray(self.indices, dtype=np.int64).reshape(-1)
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if len(indices) != len(scores):
            raise ValueError(f"{len(indices)} indices but {len(scores)} scores")
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "scores", scores)

    def __len__(self) -> int:
        return len(self.indices)

    @classmethod
    def empty(cls, params: dict[str, float] | None = None) -> Detection:
        return cls(np.empty(0, np.int64), np.empty(0, np.float64), dict(params or {}))


def scale_band(band: tuple[int, int], n: int) -> tuple[int, int]:
    """The target [low, high] outlier count for n points: low <= n//10, 1 <= high <= n//2."""
    low, high = band
    high = min(high, max(n // 2, 1))
    return min(low, n // 10, high), high


class Detector(ABC):
    """Finds outliers in latents; `detect` validates input, subclasses implement `_detect`.

    Implementing a detector
    -----------------------
    1. Subclass `Detector` in a module of this package; set `name` (the `agent.detector` value).
    2. Implement `_detect(x)`: `x` is finite float64 (n, d) (non-finite rows already dropped,
       threads already limited to `n_jobs`); return a `Detection` whose indices are rows of `x`.
       Scale any target count to the data with `scale_band`; pick the sklearn neighbour
       algorithm with `_algorithm`.
    3. Implement the classmethod `from_config(config, n_jobs)` reading its `AgentConfig` fields.
    4. Optionally override `update(n_outliers)` to adapt between cycles, and
       `detect_adaptive(latents)` to set parameters from the data first.
    5. Add it to `DETECTORS` in `ddmd_stream/detectors/__init__.py` (and its name to the
       `AgentConfig.detector` Literal).
    """

    name: ClassVar[str]
    n_jobs: int | None = None  # threads for neighbour searches; None: library defaults

    def detect(self, latents: np.ndarray) -> Detection:
        """Outliers among the rows of `latents` (n, d); rows with NaN/inf are skipped."""
        x, rows = _prepare(latents)
        with _thread_limit(self.n_jobs):
            return _reindex(self._detect(x), rows)

    def detect_adaptive(self, latents: np.ndarray) -> Detection:
        """Like `detect`, after setting the detector's parameters for these latents (a first
        cycle, or a new model's latent space); default: `detect`."""
        return self.detect(latents)

    @abstractmethod
    def _detect(self, x: FloatArray) -> Detection:
        """Outliers of finite float64 latents `x` (n, d)."""

    def update(self, n_outliers: int) -> None:  # noqa: B027 - optional hook
        """Adapt to the outlier count of the last detection (default: nothing to adapt)."""

    @classmethod
    @abstractmethod
    def from_config(cls, config: AgentConfig, n_jobs: int | None = None) -> Detector:
        """The detector as configured by the agent section, using up to n_jobs threads."""


# --------------------------------------------------------------------------- helpers


def _prepare(latents: np.ndarray) -> tuple[FloatArray, IntArray | None]:
    """float64 (n, d) latents without non-finite rows, and the kept rows (None: all kept)."""
    x = np.asarray(latents, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"latents must have shape (n, d), got {x.shape}")
    finite = np.isfinite(x).all(axis=1)
    if finite.all():
        return x, None
    logger.warning("%d of %d latents are not finite; skipped", np.sum(~finite), len(x))
    return x[finite], np.flatnonzero(finite)


def _reindex(detection: Detection, rows: IntArray | None) -> Detection:
    if rows is None:
        return detection
    return Detection(rows[detection.indices], detection.scores, detection.params)


def _algorithm(requested: str, n_features: int) -> str:
    if requested != "auto":
        return requested
    return "brute" if n_features >= BRUTE_FROM_DIM else "auto"


@contextlib.contextmanager
def _thread_limit(n_jobs: int | None) -> Iterator[None]:
    """Limit BLAS/OpenMP threads (brute force uses them) to n_jobs when it is given."""
    if n_jobs is None or n_jobs < 1:
        yield
        return
    with threadpool_limits(limits=n_jobs):
        yield
