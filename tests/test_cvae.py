"""CVAE model (tiny config) and the atomic model registry.

TensorFlow is imported lazily (fixture) so the spawned registry reader process stays light.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from ddmd_stream.config import CVAEConfig
from ddmd_stream.ml import registry

TINY = CVAEConfig(
    conv_filters=[8, 8],
    conv_kernels=[3, 3],
    conv_strides=[1, 2],
    dense_units=32,
    latent_dim=4,
)


@pytest.fixture(scope="module")
def cvae() -> ModuleType:
    import keras

    from ddmd_stream.ml import cvae as module

    keras.utils.set_random_seed(1234)
    return module


def band_maps(n: int, count: int, seed: int = 0) -> np.ndarray:
    """Band-diagonal contact maps |i-j| <= w with w varying per map (uint8, (count, n, n))."""
    rng = np.random.default_rng(seed)
    widths = rng.integers(0, max(2, n // 4), size=count)
    offsets = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    return (offsets[None, :, :] <= widths[:, None, None]).astype(np.uint8)


# --------------------------------------------------------------------------- CVAE


def test_padding_helpers(cvae: ModuleType) -> None:
    assert cvae.padded_size_for(28, [1, 2, 1, 1]) == 28
    assert cvae.padded_size_for(35, [1, 2, 1, 1]) == 36
    assert cvae.padded_size_for(10, [2, 2]) == 12
    maps = np.ones((2, 5, 5), dtype=np.uint8)
    padded = cvae.prepare_maps(maps, 8)
    assert padded.shape == (2, 8, 8, 1) and padded.dtype == np.float32
    assert padded[:, :5, :5].all() and not padded[:, 5:].any() and not padded[:, :, 5:].any()
    assert cvae.resize_maps(np.ones((1, 9, 9)), 6).shape == (1, 6, 6)


def test_loss_drops_on_band_maps(cvae: ModuleType) -> None:
    maps = band_maps(20, 320)
    config = TINY.model_copy(update={"learning_rate": 3e-3})  # few steps: learn faster
    model = cvae.CVAE.build_for(config, 20, seed=0)
    before = model.evaluate_maps(maps[256:])["loss"]
    history = model.fit_maps(maps[:256], maps[256:], epochs=5, batch_size=32)
    assert len(history["loss"]) == len(history["val_loss"]) == 5
    assert all(np.isfinite(history["loss"] + history["val_loss"]))
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_loss"][-1] < 0.5 * before, (before, history)


@pytest.mark.parametrize("size", [10, 28, 35])
def test_sizes_build_train_encode(cvae: ModuleType, size: int) -> None:
    model = cvae.CVAE.build_for(TINY, size, seed=0)
    assert model.input_size == size
    assert model.padded_size % 2 == 0 and model.padded_size >= size
    maps = band_maps(size, 48, seed=size)
    assert model.prepare(maps).shape == (48, model.padded_size, model.padded_size, 1)
    history = model.fit_maps(maps[:40], maps[40:], epochs=1, batch_size=16)
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["val_loss"][0])
    z = model.encode(maps, batch_size=20)  # 20 does not divide 48: ragged last batch
    assert z.shape == (48, TINY.latent_dim) and z.dtype == np.float32
    assert model.encode(maps[:0]).shape == (0, TINY.latent_dim)
    with pytest.raises(ValueError, match="built for"):
        model.encode(band_maps(size + 1, 2))


def test_save_load_identical_encodings(cvae: ModuleType, tmp_path: Path) -> None:
    maps = band_maps(35, 64)
    model = cvae.CVAE.build_for(TINY, 35, seed=0, extra_metadata={"round": 3})
    model.fit_maps(maps, None, epochs=1, batch_size=32)
    model.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"model.weights.h5", "model.json"}
    loaded = cvae.CVAE.load(tmp_path / "m")
    assert (loaded.input_size, loaded.padded_size) == (35, 36)
    assert loaded.cvae_config == TINY and loaded.extra_metadata == {"round": 3}
    np.testing.assert_array_equal(model.encode(maps, 16), loaded.encode(maps, 16))
    # Encoding is deterministic (dropout off, z_mean only) and batch-size independent.
    np.testing.assert_allclose(loaded.encode(maps, 64), loaded.encode(maps, 7), atol=1e-5)


def test_no_nan_on_degenerate_maps(cvae: ModuleType) -> None:
    n = 12
    rng = np.random.default_rng(5)
    maps = np.concatenate(
        [
            np.zeros((32, n, n), np.uint8),
            np.ones((32, n, n), np.uint8),
            (rng.random((32, n, n)) < 0.5).astype(np.uint8),
        ]
    )
    config = TINY.model_copy(update={"learning_rate": 0.01})  # aggressive on purpose
    for subset in (maps[:32], maps[32:64], maps[64:], maps):
        model = cvae.CVAE.build_for(config, n, seed=1)
        history = model.fit_maps(subset, subset, epochs=3, batch_size=16)
        values = [v for key in history for v in history[key]]
        assert np.all(np.isfinite(values)), history
        assert np.all(np.isfinite(model.encode(subset)))


# --------------------------------------------------------------------------- registry


def _cheap_save(content: bytes) -> Any:
    def save(directory: Path) -> None:
        (directory / "weights.bin").write_bytes(content)
        (directory / "model.json").write_text('{"ok": true}')
        (directory / "sub").mkdir()
        (directory / "sub" / "extra.txt").write_text("x" * 1000)

    return save


def test_publish_two_versions_and_ignore_tmp(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    assert registry.latest_version(model_dir) is None
    assert registry.publish_model(model_dir, _cheap_save(b"a"), {"round": 1}) == 1
    stale = model_dir / ".tmp-deadbeef"
    stale.mkdir()
    (stale / "weights.bin").write_bytes(b"partial")
    assert registry.publish_model(model_dir, _cheap_save(b"b"), {"round": 2}) == 2
    assert (model_dir / "LATEST").read_text().strip() == "v0002"
    version, path = registry.latest_version(model_dir)  # type: ignore[misc]
    assert (version, path.name) == (2, "v0002")
    meta = registry.read_meta(path)
    assert meta["round"] == 2 and meta["version"] == 2 and meta["name"] == "v0002"
    assert "created" in meta
    assert [v for v, _ in registry.list_versions(model_dir)] == [1, 2]
    assert registry.clean_stale_tmp(model_dir) == 1 and not stale.exists()

    # A failing save leaves nothing behind and LATEST untouched.
    def broken(directory: Path) -> None:
        (directory / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        registry.publish_model(model_dir, broken, {})
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]
    assert registry.latest_version(model_dir)[0] == 2  # type: ignore[index]
    assert registry.publish_model(model_dir, _cheap_save(b"c"), {}) == 3
    assert registry.prune_versions(model_dir, keep=1) == [1, 2]
    assert registry.latest_version(model_dir)[0] == 3  # type: ignore[index]


def _reader(model_dir: str, ready: Any, stop: Any, results: Any) -> None:
    """Follow LATEST until told to stop; record versions seen and any inconsistency."""
    seen: list[int] = []
    errors: list[str] = []
    reads = 0
    ready.set()
    while True:
        done = stop.is_set()
        try:
            latest = registry.latest_version(Path(model_dir))
            if latest is not None:
                version, path = latest
                meta = registry.read_meta(path)
                content = (path / "weights.bin").read_bytes()
                expected = f"version-{meta['round']}".encode() * 1000
                if meta["version"] != version or content != expected:
                    errors.append(f"{path.name}: inconsistent files")
                if (path / "sub" / "extra.txt").read_text() != "x" * 1000:
                    errors.append(f"{path.name}: partial extra.txt")
                if seen and version < seen[-1]:
                    errors.append(f"went back from {seen[-1]} to {version}")
                if not seen or seen[-1] != version:
                    seen.append(version)
                reads += 1
        except Exception as error:  # any missing/partial file is a failure
            errors.append(repr(error))
        if done:
            break
    results.put({"seen": seen, "errors": errors, "reads": reads})


def test_concurrent_reader_never_sees_partial(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    results = ctx.Queue()
    reader = ctx.Process(target=_reader, args=(str(model_dir), ready, stop, results), daemon=True)
    reader.start()
    try:
        assert ready.wait(timeout=60), "reader process did not start"
        for round_ in range(1, 21):
            content = f"version-{round_}".encode() * 1000
            version = registry.publish_model(model_dir, _cheap_save(content), {"round": round_})
            assert version == round_
            time.sleep(0.01)
        stop.set()
        outcome = results.get(timeout=60)
        reader.join(timeout=30)
    finally:
        if reader.is_alive():
            reader.kill()
    assert outcome["errors"] == []
    assert outcome["reads"] > 0 and outcome["seen"][-1] == 20
    assert outcome["seen"] == sorted(outcome["seen"])
    assert not [p for p in os.listdir(model_dir) if p.startswith(".")]
