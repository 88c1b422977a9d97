"""3dAAE on synthetic Cα point clouds, and the model interface (selection, load dispatch)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from ddmd_stream import detectors
from ddmd_stream.config import AAEConfig, TrainingConfig, parse_config
from ddmd_stream.ml import base

N_POINTS = 28
TINY = AAEConfig(
    encoder_filters=[32, 64, 64],
    encoder_kernels=[3, 3, 1],
    decoder_widths=[64, 128],
    discriminator_widths=[64, 32],
    latent_dim=8,
    learning_rate=1e-3,  # few steps: learn faster than the default 1e-4
    discriminator_learning_rate=1e-3,
)


@pytest.fixture(scope="module")
def aae() -> ModuleType:
    import keras

    from ddmd_stream.ml import aae as module

    keras.utils.set_random_seed(1234)
    return module


def helix(n: int) -> np.ndarray:
    """Ideal α-helix Cα trace: radius 2.3 Å, rise 1.5 Å and 100° per residue."""
    turn = np.deg2rad(100.0) * np.arange(n)
    return np.stack([2.3 * np.cos(turn), 2.3 * np.sin(turn), 1.5 * np.arange(n)], axis=-1)


def sheet(n: int) -> np.ndarray:
    """β-hairpin Cα trace: two antiparallel pleated strands 4.8 Å apart, 3.3 Å per residue."""
    half = n - n // 2
    x = 3.3 * np.arange(half)
    pleat = 0.9 * (np.arange(half) % 2)
    first = np.stack([x, np.zeros(half), pleat], axis=-1)
    second = np.stack([x, np.full(half, 4.8), pleat], axis=-1)[::-1]
    return np.concatenate([first, second])[:n]


def clouds(count: int, seed: int, n: int = N_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Noisy, randomly translated helices (label 0) and sheets (label 1), float32 (count, n, 3)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=count)
    shapes = np.stack([helix(n), sheet(n)])[labels]
    points = shapes + rng.normal(scale=0.7, size=shapes.shape)
    points += rng.normal(scale=4.0, size=(count, 1, 3))
    return points.astype(np.float32), labels


def nearest_centroid_accuracy(train: np.ndarray, y_train: np.ndarray, test: np.ndarray,
                              y_test: np.ndarray) -> float:
    centroids = np.stack([train[y_train == label].mean(axis=0) for label in (0, 1)])
    distances = np.linalg.norm(test[:, None, :] - centroids[None], axis=-1)
    return float(np.mean(distances.argmin(axis=1) == y_test))


# --------------------------------------------------------------------------- loss


def test_chamfer_distance(aae: ModuleType) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 3)).astype(np.float32)
    same = np.asarray(aae.chamfer_distance(x, x))
    np.testing.assert_allclose(same, 0.0, atol=1e-5)
    permuted = np.asarray(aae.chamfer_distance(x, x[:, rng.permutation(7)]))
    np.testing.assert_allclose(permuted, 0.0, atol=1e-5)  # order does not matter
    one = np.zeros((1, 1, 3), np.float32)
    two = np.array([[[0, 0, 0], [3, 0, 0]]], np.float32)
    # one→two: 0; two→one: 0 + 9
    np.testing.assert_allclose(np.asarray(aae.chamfer_distance(one, two)), [9.0], atol=1e-5)


# --------------------------------------------------------------------------- training


def test_chamfer_drops_and_latents_separate_helices_from_sheets(aae: ModuleType) -> None:
    x, y = clouds(480, seed=0)
    train, val, test = slice(0, 320), slice(320, 400), slice(400, 480)
    model = aae.AAEModel.build(TINY, x[:1], seed=0)
    assert (model.input_field, model.preferred_detector) == ("positions", "lof")
    history = model.fit(x[train], x[val], epochs=6, batch_size=32)
    assert {"loss", "val_loss", "ae_loss", "disc_loss", "gradient_penalty"} <= set(history)
    assert all(np.isfinite(v) for values in history.values() for v in values)
    first, last = history["val_loss"][0], history["val_loss"][-1]
    assert last < 0.7 * first, history["val_loss"]
    assert history["loss"][-1] < history["loss"][0]

    z = model.encode(x)
    assert z.shape == (480, TINY.latent_dim) and z.dtype == np.float32
    accuracy = nearest_centroid_accuracy(z[train], y[train], z[test], y[test])
    assert accuracy > 0.75, accuracy


def test_input_preparation_records_centring_and_scale(aae: ModuleType) -> None:
    x, _ = clouds(96, seed=1)
    model = aae.AAEModel.build(TINY, x[:1], seed=0)
    assert model.input_statistics()["frames_seen"] == 0 and model.input_statistics()["scale"] == 1
    model.fit(x[:64], None, epochs=1, batch_size=32)
    centred = x[:64] - x[:64].mean(axis=1, keepdims=True)
    expected = np.sqrt(np.mean(np.sum(centred.astype(np.float64) ** 2, axis=-1)))
    stats = model.input_statistics()
    assert stats["frames_seen"] == 64
    np.testing.assert_allclose(stats["scale"], expected, rtol=1e-5)

    # Running statistics: a second fit on clouds twice as large moves the scale part-way.
    model.fit(2.0 * x[64:], None, epochs=1, batch_size=32)
    big = 2.0 * (x[64:] - x[64:].mean(axis=1, keepdims=True))
    mean_square = (64 * expected**2 + 32 * np.mean(np.sum(big.astype(np.float64) ** 2, -1))) / 96
    np.testing.assert_allclose(model.input_statistics()["scale"], np.sqrt(mean_square), rtol=1e-5)

    # Centring: a translated copy encodes the same; the metadata says what was done.
    z = model.encode(x[:16])
    shifted = x[:16] + np.array([30.0, -12.0, 5.0], np.float32)
    np.testing.assert_allclose(model.encode(shifted), z, atol=2e-4)
    meta = model.metadata()["input_preparation"]
    assert "centroid" in meta["centre"] and meta["units"] == "angstrom"
    np.testing.assert_allclose(meta["scale"], np.sqrt(mean_square), rtol=1e-5)


def test_save_load_identical_encodings(aae: ModuleType, tmp_path: Path) -> None:
    x, _ = clouds(64, seed=2)
    model = aae.AAEModel.build(TINY, x[:1], seed=0, extra_metadata={"round": 3})
    model.fit(x, None, epochs=1, batch_size=32)
    model.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"model.weights.h5", "model.json"}
    saved = json.loads((tmp_path / "m" / "model.json").read_text())
    assert saved["format"] == "ddmd_stream.aae" and saved["input_points"] == N_POINTS

    loaded = base.load_model(tmp_path / "m")  # dispatches on model.json
    assert isinstance(loaded, aae.AAEModel)
    assert loaded.config == TINY and loaded.extra_metadata == {"round": 3}
    assert loaded.input_statistics() == pytest.approx(model.input_statistics())
    np.testing.assert_array_equal(model.encode(x, 16), loaded.encode(x, 16))
    np.testing.assert_allclose(loaded.encode(x, 64), loaded.encode(x, 5), atol=1e-5)
    # get/set_weights carry the input statistics too.
    fresh = aae.AAEModel.build(TINY, x[:1], seed=1)
    fresh.set_weights(model.get_weights())
    np.testing.assert_allclose(fresh.encode(x), model.encode(x), atol=1e-6)
    # Training continues after loading (optimizer state restored).
    history = loaded.fit(x, x[:16], epochs=1, batch_size=32)
    assert np.isfinite(history["val_loss"][0])


def test_point_subset_and_shape_checks(aae: ModuleType) -> None:
    x, _ = clouds(40, seed=3, n=30)
    config = TINY.model_copy(update={"point_indices": list(range(0, 30, 2))})
    model = aae.AAEModel.build(config, x[:1], seed=0)
    assert (model.input_points, model.num_points) == (30, 15)
    assert model.prepare(x).shape == (40, 15, 3)
    model.fit(x[:32], x[32:], epochs=1, batch_size=16)
    assert model.encode(x).shape == (40, TINY.latent_dim)
    assert model.encode(x[:0]).shape == (0, TINY.latent_dim)
    with pytest.raises(ValueError, match="built for 30"):
        model.encode(x[:, :20])
    with pytest.raises(ValueError, match="point_indices"):
        aae.AAEModel.build(TINY.model_copy(update={"point_indices": [0, 40]}), x[:1])
    valid = TINY.model_copy(update={"encoder_padding": "valid"})
    with pytest.raises(ValueError, match="too few"):
        aae.AAEModel.build(valid, x[:1, :4])


# --------------------------------------------------------------------------- interface + config


def test_training_model_is_a_one_line_switch(aae: ModuleType) -> None:
    from ddmd_stream.ml.cvae import CVAEModel

    default = parse_config({}).training
    assert default.model == "cvae" and default.cvae.latent_dim == 10
    assert default.aae.latent_dim == 16 and default.aae.lambda_gp == 10.0
    assert default.aae.lambda_rec == 0.5 and default.aae.learning_rate == 1e-4
    switched = parse_config({"training": {"model": "aae"}}).training
    assert switched.model_settings is switched.aae
    model = base.model_for(switched.model_copy(update={"aae": TINY}), np.zeros((1, 12, 3)))
    assert isinstance(model, aae.AAEModel) and model.input_field == "positions"
    maps = np.zeros((1, 12, 12), np.uint8)
    cvae = base.model_for(TrainingConfig(cvae={"conv_filters": [4], "conv_kernels": [3],
                                               "conv_strides": [1]}), maps)
    assert isinstance(cvae, CVAEModel) and cvae.input_field == "contact_map"
    assert cvae.preferred_detector == "dbscan"
    # Older configs: CVAE hyperparameters under `model`.
    legacy = parse_config({"training": {"model": {"latent_dim": 7}}}).training
    assert legacy.model == "cvae" and legacy.cvae.latent_dim == 7


def test_detector_resolution_and_model_kinds() -> None:
    assert detectors.resolve("auto", "lof") == "lof"
    assert detectors.resolve("dbscan", "lof") == "dbscan"
    assert parse_config({}).agent.detector == "auto"
    assert base.model_kind("aae").input_field == "positions"
    with pytest.raises(ValueError, match="unknown model"):
        base.model_kind("gan")


def test_load_model_rejects_unknown_format(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text('{"format": "something.else"}')
    with pytest.raises(base.ModelError, match="unknown model format"):
        base.load_model(tmp_path)
