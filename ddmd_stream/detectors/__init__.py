"""Outlier detectors in a model's latent space, and ranking of their outliers.

- `base`: the `Detector` interface ("Implementing a detector" in its docstring), `Detection`,
  `scale_band` and the helpers every detector shares.
- `dbscan`: `DBSCANDetector`, DBSCAN noise points with eps adapted to the outlier band.
- `neighbours`: `SlidingNeighbours`, the k nearest neighbours DBSCAN's noise is read from.
- `lof`: `LOFDetector`, the points with the largest local outlier factor.
- `uniform`: `UniformDetector`, frames drawn uniformly (the random-restart control).
- `ranking`: `rank_outliers`, which detected outliers are published first.
- `embedding`: `has_spread`, `input_embedding`: where a model maps every frame to one point, the
  agent detects on the principal components of its input instead.

`make_detector(config, preferred, n_jobs)` builds the detector `agent.detector` names. `resolve`
is the one place that decides what `agent.detector: auto` means: the model's preferred detector
(`ModelKind.preferred_detector`; CVAE: dbscan, 3dAAE: lof). New detectors: see `Detector`, then
add one entry to `DETECTORS`.
"""

from __future__ import annotations

from ddmd_stream.config import AgentConfig
from ddmd_stream.detectors.base import BRUTE_FROM_DIM, Detection, Detector, scale_band
from ddmd_stream.detectors.dbscan import DBSCANDetector
from ddmd_stream.detectors.lof import LOFDetector
from ddmd_stream.detectors.ranking import Ranking, rank_outliers
from ddmd_stream.detectors.uniform import UniformDetector

__all__ = [
    "AUTO",
    "BRUTE_FROM_DIM",
    "DEFAULT_DETECTOR",
    "DETECTORS",
    "DBSCANDetector",
    "Detection",
    "Detector",
    "LOFDetector",
    "Ranking",
    "UniformDetector",
    "make_detector",
    "rank_outliers",
    "resolve",
    "scale_band",
]

DETECTORS: dict[str, type[Detector]] = {
    DBSCANDetector.name: DBSCANDetector,
    LOFDetector.name: LOFDetector,
    UniformDetector.name: UniformDetector,
}

AUTO = "auto"  # `agent.detector: auto`: the model's preferred detector
DEFAULT_DETECTOR = DBSCANDetector.name  # `auto` where no model preference is known


def resolve(requested: str, preferred: str | None = None) -> str:
    """The detector to run: `requested`, unless it is "auto": then the model's `preferred`
    (`DEFAULT_DETECTOR` where none is given). Raises ValueError for an unknown name."""
    name = (preferred or DEFAULT_DETECTOR) if requested == AUTO else requested
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {sorted(DETECTORS)}")
    return name


def make_detector(
    config: AgentConfig, preferred: str | None = None, n_jobs: int | None = None
) -> Detector:
    """The detector `config.detector` names (see `resolve`), configured from the agent section.

    preferred: the model's preferred detector, used for `detector: auto`.
    n_jobs: threads for neighbour searches (sklearn n_jobs, and the BLAS/OpenMP pools that brute
    force uses); None = library defaults (all cores). Pass the agent task's CPU count.
    """
    return DETECTORS[resolve(config.detector, preferred)].from_config(config, n_jobs)
