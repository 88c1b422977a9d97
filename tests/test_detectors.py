"""Tests of ddmd_stream.detectors: planted outliers, eps adaptation, ranking, edge cases."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from ddmd_stream.config import AgentConfig
from ddmd_stream.detectors import (
    DEFAULT_DETECTOR,
    DETECTORS,
    DBSCANDetector,
    Detection,
    LOFDetector,
    make_detector,
    rank_outliers,
    resolve,
    scale_band,
)

logger = logging.getLogger(__name__)

N_BLOB, N_FAR, DIM = 2000, 30, 10


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Neighbour searches on one thread: faster on a shared machine, and frugal."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, np.ndarray]:
    """2000 points in 3 Gaussian blobs (sd 0.5) in 10-D plus 30 far points; (latents, far rows)."""
    rng = np.random.default_rng(0)
    centres = rng.uniform(-5, 5, size=(3, DIM))
    blobs = centres[rng.integers(0, 3, N_BLOB)] + 0.5 * rng.normal(size=(N_BLOB, DIM))
    far = rng.uniform(-15, 15, size=(N_FAR, DIM))
    latents = np.vstack([blobs, far])
    order = rng.permutation(len(latents))  # planted rows anywhere, not only at the end
    return latents[order], np.flatnonzero(order >= N_BLOB)


def recall(detection: Detection, planted_rows: np.ndarray) -> float:
    return len(np.intersect1d(detection.indices, planted_rows)) / len(planted_rows)


# --------------------------------------------------------------------------- planted outliers


def test_dbscan_finds_planted_outliers(planted: tuple[np.ndarray, np.ndarray]) -> None:
    latents, far = planted
    detector = DBSCANDetector(eps=0.3, min_samples=10, band=(20, 100))
    detection = detector.detect_adaptive(latents)
    assert detector.in_band(len(detection))
    assert recall(detection, far) >= 0.9
    assert np.all(detection.scores > detection.params["eps"])  # noise: k-distance above eps
    assert 1 <= detection.params["core"] <= len(latents) - len(detection)


def test_lof_finds_planted_outliers(planted: tuple[np.ndarray, np.ndarray]) -> None:
    latents, far = planted
    detection = LOFDetector(n_neighbors=20, band=(20, 100)).detect(latents)
    assert 20 <= len(detection) <= 100
    assert recall(detection, far) >= 0.9
    assert np.all(np.diff(detection.scores) <= 0)  # reported by descending LOF
    assert np.all(detection.scores > 1.0)


def test_lof_count_is_clamped_into_band(planted: tuple[np.ndarray, np.ndarray]) -> None:
    latents, _ = planted
    detection = LOFDetector(n_neighbors=20, band=(150, 200)).detect(latents)
    assert len(detection) == 150
    assert detection.params["n_above_threshold"] < 150


# --------------------------------------------------------------------------- eps adaptation


@pytest.mark.parametrize("start_eps", [0.4, 10.0])
def test_eps_adapts_into_band(planted: tuple[np.ndarray, np.ndarray], start_eps: float) -> None:
    latents, _ = planted
    detector = DBSCANDetector(eps=start_eps, min_samples=10, band=(40, 150), factor=1.25)
    counts = []
    for _ in range(6):
        count = len(detector.detect(latents))
        counts.append(count)
        if detector.in_band(count):
            break
        detector.update(count)
    logger.info("start eps %s: counts %s, final eps %.3f", start_eps, counts, detector.eps)
    assert 40 <= counts[-1] <= 150, counts


def interpolated(
    small: tuple[float, int], large: tuple[float, int], band: tuple[int, int]
) -> float:
    """eps where log(count + 1), linear in log(eps) between the brackets, hits the band centre."""
    target = np.log(np.sqrt((band[0] + 1) * (band[1] + 1)))
    share = (np.log(small[1] + 1) - target) / (np.log(small[1] + 1) - np.log(large[1] + 1))
    return float(small[0] ** (1 - share) * large[0] ** share)


def test_overshoot_narrows_between_brackets(planted: tuple[np.ndarray, np.ndarray]) -> None:
    latents, _ = planted
    band = (40, 150)
    detector = DBSCANDetector(eps=0.5, min_samples=10, band=band, factor=2.0)
    detector.detect(latents)
    detector.update(1000)  # too many at 0.5 -> 1.0
    assert detector.eps == pytest.approx(1.0)
    detector.update(0)  # too few at 1.0: crossed, so interpolate in the bracket [0.5, 1]
    second = detector.eps
    assert second == pytest.approx(interpolated((0.5, 1000), (1.0, 0), band))
    detector.update(10_000)  # too many: crossed again, interpolate in [second, 1]
    third = detector.eps
    assert third == pytest.approx(interpolated((second, 10_000), (1.0, 0), band))
    detector.update(10_000)  # too many twice in a row: bisect [third, 1]
    fourth = detector.eps
    assert fourth == pytest.approx(np.sqrt(third * 1.0))
    detector.update(100)  # in band: eps kept, brackets and step reset
    assert detector.eps == fourth
    detector.update(0)
    assert detector.eps == pytest.approx(fourth / 2.0)


def test_step_up_stops_where_count_cannot_exceed_high(
    planted: tuple[np.ndarray, np.ndarray],
) -> None:
    latents, _ = planted
    detector = DBSCANDetector(eps=1.0, min_samples=10, band=(40, 150), factor=4.0)
    assert len(detector.detect(latents)) > 150
    detector.update(len(detector.detect(latents)))
    assert 1.0 < detector.eps < 4.0
    assert len(detector.detect(latents)) <= 150  # at most `high` non-core points there


def test_step_up_from_all_noise_reaches_k_distances(
    planted: tuple[np.ndarray, np.ndarray],
) -> None:
    latents, _ = planted
    detector = DBSCANDetector(eps=1e-3, min_samples=10, band=(40, 150))
    assert len(detector.detect(latents)) == len(latents)
    detector.update(len(latents))
    assert detector.eps > 0.1  # the least k-distance, not 1.25e-3


def test_steps_grow_while_far_off(planted: tuple[np.ndarray, np.ndarray]) -> None:
    latents, _ = planted
    detector = DBSCANDetector(eps=1.0, min_samples=10, band=(40, 150), factor=1.25)
    detector.detect(latents)
    eps = [detector.eps]
    for _ in range(3):
        detector.update(0)
        eps.append(detector.eps)
    ratios = np.array(eps[:-1]) / np.array(eps[1:])
    assert ratios == pytest.approx([1.25, 1.25**2, 1.25**3])


def test_eps_stays_within_data_bounds(planted: tuple[np.ndarray, np.ndarray]) -> None:
    latents, _ = planted
    detector = DBSCANDetector(eps=1e6, min_samples=10, band=(40, 150))
    detector.detect(latents)
    diameter = np.linalg.norm(np.ptp(latents, axis=0))
    assert 0 < detector.eps <= diameter
    for _ in range(200):
        detector.update(10**6)  # always "too many": eps grows, but stays bounded
    assert detector.eps <= diameter


@pytest.mark.parametrize("eps", [0.05, 0.6, 1.0, 1.6, 3.0, 30.0])
def test_noise_is_exactly_dbscans(planted: tuple[np.ndarray, np.ndarray], eps: float) -> None:
    """The outliers are scikit-learn DBSCAN's noise points, at any eps (duplicates included)."""
    from sklearn.cluster import DBSCAN

    latents, _ = planted
    latents = np.vstack([latents, latents[:40], latents[:40]])  # points in triplicate
    detector = DBSCANDetector(eps=eps, min_samples=10, band=(40, 150))
    found = detector.detect(latents)
    noise = np.flatnonzero(DBSCAN(eps=eps, min_samples=10).fit(latents).labels_ == -1)
    np.testing.assert_array_equal(found.indices, noise)
    assert found.params["core"] + len(noise) <= len(latents)


def test_sliding_neighbours_match_a_fresh_search() -> None:
    """A window moving on (oldest rows out, new in; duplicates and lost neighbours among them)
    gets the neighbours a search over all its points finds."""
    from ddmd_stream.detectors.neighbours import SlidingNeighbours

    rng = np.random.default_rng(3)
    stream = np.repeat(rng.normal(size=(700, 4)), rng.integers(1, 3, 700), axis=0)  # duplicates
    sliding, start, end = SlidingNeighbours(k=6), 0, 300
    for step, (drop, add) in enumerate([(0, 0), (0, 50), (40, 40), (120, 10), (0, 0), (5, 200)]):
        start, end = start + drop, end + add
        window = stream[start:end]
        distances, indices = sliding.update(window)
        fresh, _ = SlidingNeighbours(k=6).update(window)
        np.testing.assert_allclose(np.sort(distances, axis=1), fresh, atol=1e-12, err_msg=step)
        assert indices.min() >= 0 and indices.max() < len(window)
        np.testing.assert_allclose(  # each index names a point at that distance
            np.linalg.norm(window[indices] - window[:, None], axis=2), distances, atol=1e-12)


def test_noise_stays_dbscans_as_the_window_slides(planted: tuple[np.ndarray, np.ndarray]) -> None:
    from sklearn.cluster import DBSCAN

    latents, _ = planted
    detector = DBSCANDetector(eps=1.0, min_samples=10, band=(40, 150))
    for start, end in [(0, 1500), (100, 1700), (300, 2030)]:
        window = latents[start:end]
        found = detector.detect(window)
        noise = np.flatnonzero(DBSCAN(eps=1.0, min_samples=10).fit(window).labels_ == -1)
        np.testing.assert_array_equal(found.indices, noise)


def test_update_before_detect_and_after_degenerate_is_noop() -> None:
    detector = DBSCANDetector(eps=0.5, min_samples=10, band=(40, 150))
    detector.update(0)
    assert detector.eps == 0.5
    detector.detect(np.zeros((50, 4)))
    detector.update(0)
    assert detector.eps == 0.5


def test_scale_band() -> None:
    assert scale_band((1000, 5000), 80_000) == (1000, 5000)
    assert scale_band((1000, 5000), 2030) == (203, 1015)
    assert scale_band((1000, 5000), 5) == (0, 2)
    assert scale_band((1000, 5000), 1) == (0, 1)
    assert scale_band((0, 0), 100) == (0, 0)


# --------------------------------------------------------------------------- ranking


@pytest.fixture
def detection() -> Detection:
    return Detection(np.array([7, 3, 9, 1]), np.array([0.5, 2.0, 1.0, 3.0]), {"eps": 1.0})


def test_rank_by_rmsd_ascending(detection: Detection) -> None:
    rmsd = np.full(10, 99.0)
    rmsd[[7, 3, 9, 1]] = [4.0, 1.0, np.nan, 2.0]
    assert rank_outliers(detection, rmsd, "rmsd", 3).tolist() == [3, 1, 7]
    assert rank_outliers(detection, rmsd, "rmsd", 10).tolist() == [3, 1, 7, 9]  # NaN last


def test_rank_by_rmsd_ties_by_score(detection: Detection) -> None:
    assert rank_outliers(detection, np.ones(10), "rmsd", 4).tolist() == [1, 3, 9, 7]


def test_rank_by_score_descending(detection: Detection) -> None:
    assert rank_outliers(detection, None, "score", 2).tolist() == [1, 3]


def test_rank_random_is_reproducible(detection: Detection) -> None:
    first = rank_outliers(detection, None, "random", 3, np.random.default_rng(42))
    again = rank_outliers(detection, None, "random", 3, np.random.default_rng(42))
    assert first.tolist() == again.tolist()
    assert len(set(first.tolist())) == 3 and set(first.tolist()) <= {7, 3, 9, 1}
    assert rank_outliers(detection, None, "random", 3, 42).tolist() == first.tolist()


def test_rank_edge_cases(detection: Detection) -> None:
    assert len(rank_outliers(detection, None, "score", 0)) == 0
    assert len(rank_outliers(Detection.empty(), np.ones(3), "rmsd", 5)) == 0
    with pytest.raises(ValueError, match="rmsd"):
        rank_outliers(detection, np.ones(5), "rmsd", 2)  # index 9 has no rmsd
    with pytest.raises(ValueError, match="ranking"):
        rank_outliers(detection, None, "best", 2)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- factory


def test_make_detector_follows_config() -> None:
    dbscan = make_detector(AgentConfig(eps=0.7, dbscan_min_samples=5, outlier_band=(3, 9)))
    assert isinstance(dbscan, DBSCANDetector)
    assert (dbscan.eps, dbscan.min_samples, dbscan.band) == (0.7, 5, (3, 9))
    lof = make_detector(AgentConfig(detector="lof", lof_neighbors=7), n_jobs=1)
    assert isinstance(lof, LOFDetector) and (lof.n_neighbors, lof.n_jobs) == (7, 1)
    assert lof.name == "lof" and dbscan.name == "dbscan"


def test_auto_means_the_models_preferred_detector() -> None:
    assert isinstance(make_detector(AgentConfig(detector="auto"), "lof"), LOFDetector)
    assert isinstance(make_detector(AgentConfig(detector="dbscan"), "lof"), DBSCANDetector)
    assert resolve("auto") == DEFAULT_DETECTOR == "dbscan"
    assert set(DETECTORS) == {"dbscan", "lof", "uniform"}
    with pytest.raises(ValueError, match="unknown detector"):
        resolve("auto", "kmeans")


# --------------------------------------------------------------------------- degenerate input


@pytest.mark.parametrize("make", [lambda: DBSCANDetector(0.5, 10, (1, 5)),
                                  lambda: LOFDetector(20, (1, 5))])
@pytest.mark.parametrize("latents", [np.zeros((0, 10)), np.ones((1, 10)),
                                     np.random.default_rng(1).normal(size=(5, 10)),
                                     np.full((200, 10), 0.3)],
                         ids=["empty", "one", "fewer-than-min-samples", "identical"])
def test_degenerate_input(make: object, latents: np.ndarray) -> None:
    detector = make()  # type: ignore[operator]
    detection = detector.detect(latents)
    assert len(detection) == len(detection.scores) <= len(latents)
    assert np.all((detection.indices >= 0) & (detection.indices < max(len(latents), 1)))
    detector.update(len(detection))
    if isinstance(detector, DBSCANDetector):
        assert len(detector.detect_adaptive(latents)) == 0
        assert detector.eps == 0.5


def test_non_finite_rows_are_skipped(planted: tuple[np.ndarray, np.ndarray]) -> None:
    latents, far = planted
    spoiled = latents.copy()
    spoiled[[0, 5]] = np.nan
    detection = LOFDetector(n_neighbors=20, band=(20, 100)).detect(spoiled)
    assert 0 not in detection.indices and 5 not in detection.indices
    assert recall(detection, far) >= 0.9  # indices refer to the original rows


def test_bad_shape_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        DBSCANDetector().detect(np.ones(10))


@pytest.mark.parametrize("start_eps", [1e-4, 50.0])
def test_first_cycle_lands_in_band_from_any_eps(
    planted: tuple[np.ndarray, np.ndarray], start_eps: float
) -> None:
    """A far-off configured eps costs nothing: the first cycle sets eps where the count is the
    band's centre."""
    latents, far = planted
    detector = DBSCANDetector(eps=start_eps, min_samples=10, band=(20, 100))
    detection = detector.detect_adaptive(latents)
    assert detector.in_band(len(detection)), (len(detection), detector.eps)
    assert recall(detection, far) >= 0.9


def test_a_new_latent_scale_is_met_at_once(planted: tuple[np.ndarray, np.ndarray]) -> None:
    """A new model's latents (here: 20x the scale) make the adapted eps meaningless; the agent's
    first cycle under it sets eps for them again."""
    latents, _ = planted
    detector = DBSCANDetector(eps=0.3, min_samples=10, band=(20, 100))
    assert detector.in_band(len(detector.detect_adaptive(latents)))
    assert not detector.in_band(len(detector.detect(latents * 20.0)))
    assert detector.in_band(len(detector.detect_adaptive(latents * 20.0)))
