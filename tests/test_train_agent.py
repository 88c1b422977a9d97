"""Trainer and agent loops on real BP5 stores, real Keras models and the real catalog."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from ddmd_stream.catalog import OutlierCatalog
from ddmd_stream.events import read_events
from ddmd_stream.ml.data import FrameWindow, RingBuffer
from ddmd_stream.ml.registry import latest_version, read_meta
from ddmd_stream.rundir import RunDir
from ddmd_stream.streams import FrameWriter
from ddmd_stream.task import TaskContext, TaskFile
from ddmd_stream.workflow.prepare import prepare_run_dir

N_RES, N_ATOMS = 12, 30
TINY = {
    "training": {"min_samples": 20, "epochs": 2, "batch_size": 16, "seed": 3,
                 "cvae": {"conv_filters": [8, 8], "conv_kernels": [3, 3], "conv_strides": [1, 2],
                          "dense_units": 16, "latent_dim": 3},
                 "aae": {"encoder_filters": [16, 32, 32], "encoder_kernels": [3, 3, 1],
                         "decoder_widths": [32, 64], "discriminator_widths": [32, 16],
                         "latent_dim": 4, "learning_rate": 1e-3,
                         "discriminator_learning_rate": 1e-3}},
    "agent": {"min_samples": 20, "outlier_band": [3, 10], "n_outliers": 5, "eps": 0.5,
              "dbscan_min_samples": 4, "seed": 3, "ranking": "rmsd"},
}


def synthetic_frames(count: int, start: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Band-diagonal contact maps of varying width with matching ids and coordinates.

    `positions` are Cα clouds (Å): noisy helices, random coils for the planted oddities.
    """
    widths = rng.integers(1, 4, size=count)
    index = np.arange(N_RES)
    offsets = np.abs(index[:, None] - index[None, :])
    maps = np.stack([(offsets <= w).astype(np.uint8) for w in widths])
    noise = rng.random(maps.shape) < 0.03
    maps = np.where(noise, 1 - maps, maps).astype(np.uint8)
    odd = rng.choice(count, size=max(1, count // 12), replace=False)
    maps[odd] = (rng.random((len(odd), N_RES, N_RES)) < 0.5).astype(np.uint8)  # planted oddities
    turn = np.deg2rad(100.0) * np.arange(N_RES)
    helix = np.stack([2.3 * np.cos(turn), 2.3 * np.sin(turn), 1.5 * np.arange(N_RES)], axis=-1)
    positions = helix + rng.normal(scale=0.3, size=(count, N_RES, 3))
    positions[odd] = np.cumsum(rng.normal(scale=2.2, size=(len(odd), N_RES, 3)), axis=1)
    positions += rng.normal(scale=5.0, size=(count, 1, 3))  # the clouds drift about
    return {
        "contact_map": maps,
        "positions": positions.astype(np.float32),
        "rmsd": rng.uniform(0.5, 8.0, size=count).astype(np.float32),
        "sim_id": (np.arange(start, start + count) % 3).astype(np.int64),
        "step": np.arange(start, start + count, dtype=np.int64) * 100,
        "segment_id": np.zeros(count, np.int64),
        "structure_id": np.zeros(count, np.int64),
        "all_positions": rng.normal(size=(count, N_ATOMS, 3)).astype(np.float32),
        "velocities": rng.normal(size=(count, N_ATOMS, 3)).astype(np.float32),
    }


@pytest.fixture
def run_with_store(make_config):
    config = make_config(**TINY)
    run = prepare_run_dir(config)
    writer = FrameWriter(run.adios_xml, config.streams.aggregator_io, run.aggregator_store(0))
    yield config, run, writer
    writer.close()


def context(config, run: RunDir, role: str) -> TaskContext:
    return TaskContext(TaskFile(role, 0, run.root, time.time() + 300), config)


def test_ring_buffer_keeps_latest_in_order() -> None:
    ring = RingBuffer(5)
    for start in (0, 3, 6):
        ring.add({"x": np.arange(start, start + 3)})
    assert ring.latest()["x"].tolist() == [4, 5, 6, 7, 8]
    assert ring.latest(2)["x"].tolist() == [7, 8]
    ring.add({"x": np.arange(100, 112)})  # larger than the capacity
    assert ring.latest()["x"].tolist() == [107, 108, 109, 110, 111]
    assert ring.total == 21


def test_ring_buffer_gathers_only_the_fields_asked_for() -> None:
    ring = RingBuffer(4)
    ring.add({"x": np.arange(6), "big": np.arange(6) * 10})
    rows = ring.rows()
    assert ring.gather(rows, ["x"]).keys() == {"x"}
    assert ring.gather(rows[[0, 3]], ["big"])["big"].tolist() == [20, 50]
    assert ring.latest(2, ["big"])["big"].tolist() == [40, 50]


def test_window_reads_only_new_steps(run_with_store) -> None:
    config, run, writer = run_with_store
    rng = np.random.default_rng(0)
    window = FrameWindow(run.adios_xml, config.streams.aggregator_io, run.stream_dir,
                         ["contact_map", "step"], max_samples=25)
    writer.write(synthetic_frames(10, 0, rng))
    writer.write(synthetic_frames(5, 10, rng))
    assert window.update() == 15
    assert window.update() == 0
    writer.write(synthetic_frames(20, 15, rng))  # written while the reader is open
    assert window.update() == 20
    steps = window.latest()["step"] // 100
    assert steps.tolist() == list(range(10, 35))  # window of 25, oldest dropped, no repeats
    assert window.total_seen == 35
    window.close()


def test_trainer_publishes_best_model(run_with_store) -> None:
    from ddmd_stream.train import Trainer

    config, run, writer = run_with_store
    writer.write(synthetic_frames(64, 0, np.random.default_rng(1)))
    trainer = Trainer(context(config, run, "trainer"))
    trainer.window.update()
    first = trainer.train_round()
    assert first == 1
    version, path = latest_version(run.model_dir)
    meta = read_meta(path)
    assert version == 1 and meta["samples"] == 64 and np.isfinite(meta["val_loss"])
    assert (path / "model.weights.h5").exists()
    for _ in range(3):
        trainer.train_round()
    published = latest_version(run.model_dir)[0]
    newest = read_meta(latest_version(run.model_dir)[1])
    assert newest["val_loss"] <= meta["val_loss"] or published == 1


def test_agent_publishes_outliers_ranked_by_rmsd(run_with_store) -> None:
    from ddmd_stream.agent import Agent
    from ddmd_stream.train import Trainer

    config, run, writer = run_with_store
    frames = synthetic_frames(80, 0, np.random.default_rng(2))
    writer.write(frames)
    trainer = Trainer(context(config, run, "trainer"))
    trainer.window.update()
    trainer.train_round()

    agent = Agent(context(config, run, "agent"))
    assert agent.cycle()
    catalog = OutlierCatalog(run.catalog_file).load()
    assert catalog.version == 1
    records = catalog.records
    assert 1 <= len(records) <= config.agent.n_outliers
    rmsds = [r.rmsd for r in records]
    assert rmsds == sorted(rmsds)
    for record in records:
        index = int(np.flatnonzero(frames["step"] == record.step)[0])
        np.testing.assert_array_equal(record.positions, frames["all_positions"][index])
        np.testing.assert_array_equal(record.velocities, frames["velocities"][index])
        assert record.sim_id == frames["sim_id"][index] and record.model_version == 1


def test_agent_encodes_only_new_frames_until_the_model_changes(make_config) -> None:
    """Cached latents: frames already encoded by this model version are not encoded again."""
    from ddmd_stream.agent import Agent
    from ddmd_stream.ml.base import load_model
    from ddmd_stream.train import Trainer

    config = make_config(**{**TINY, "agent": {**TINY["agent"], "max_samples": 100}})
    run = prepare_run_dir(config)
    store = run.aggregator_store(0)
    with FrameWriter(run.adios_xml, config.streams.aggregator_io, store) as writer:
        rng = np.random.default_rng(6)
        writer.write(synthetic_frames(80, 0, rng))
        trainer = Trainer(context(config, run, "trainer"))
        trainer.window.update()
        trainer.train_round()
        agent = Agent(context(config, run, "agent"))

        def encoded_by_next_cycle() -> int:
            assert agent.cycle()
            agent.ctx.events.flush()
            spans = [e for e in read_events(agent.ctx.events.path) if e["event"] == "encode"]
            return spans[-1]["encoded"]

        assert encoded_by_next_cycle() == 80
        writer.write(synthetic_frames(30, 80, rng))  # 10 of the oldest rows are overwritten
        assert encoded_by_next_cycle() == 30
        assert encoded_by_next_cycle() == 0
        rows = agent.window.rows()
        cached, _ = agent.latents.encode(rows, agent.model, agent.model_version, 64)
        field = agent.model.input_field
        model = load_model(latest_version(run.model_dir)[1])
        again = model.encode(agent.window.gather(rows, [field])[field], 64)
        np.testing.assert_allclose(cached, again, rtol=1e-4, atol=1e-5)  # row by row, same frames
        trainer.window.update()
        trainer.best_val = np.inf  # publish the next round whatever its loss
        trainer.train_round()
        assert encoded_by_next_cycle() == 100  # a new model: every frame again


class _Collapsed:
    """A model whose encoder maps every frame to one point (the fault injected)."""

    def __init__(self, model) -> None:
        self.model = model
        self.input_field = model.input_field
        self.preferred_detector = model.preferred_detector

    def encode(self, inputs: np.ndarray, batch_size: int) -> np.ndarray:
        return np.zeros((len(inputs), 3), np.float32)


def test_agent_finds_outliers_on_the_inputs_when_the_latents_collapse(run_with_store) -> None:
    """All latents equal: no detector can judge them, so the agent detects on the model's
    input (principal components of the contact maps) and still publishes."""
    from ddmd_stream.agent import Agent
    from ddmd_stream.train import Trainer

    config, run, writer = run_with_store
    writer.write(synthetic_frames(80, 0, np.random.default_rng(2)))
    trainer = Trainer(context(config, run, "trainer"))
    trainer.window.update()
    trainer.train_round()
    agent = Agent(context(config, run, "agent"))
    assert agent.load_newest_model()
    agent.model = _Collapsed(agent.model)
    assert agent.cycle()
    agent.ctx.events.flush()
    cycle = [e for e in read_events(agent.ctx.events.path) if e["event"] == "cycle"][-1]
    assert cycle["on_inputs"] == 1.0 and cycle["outliers"] >= 1, cycle
    catalog = OutlierCatalog(run.catalog_file).load()
    assert catalog.version == 1 and 1 <= len(catalog.records) <= config.agent.n_outliers
    assert agent.detector.eps == config.agent.eps  # the latent detector was not adapted


def test_agent_waits_without_model_or_data(make_config) -> None:
    from ddmd_stream.agent import Agent

    config = make_config(**TINY)
    run = prepare_run_dir(config)
    agent = Agent(context(config, run, "agent"))
    assert agent.cycle() is False
    assert OutlierCatalog(run.catalog_file).load().version == 0


def test_agent_survives_broken_model(run_with_store) -> None:
    from ddmd_stream.agent import Agent

    config, run, writer = run_with_store
    writer.write(synthetic_frames(40, 0, np.random.default_rng(4)))
    broken = Path(run.model_dir / "v0001")
    broken.mkdir(parents=True)
    (broken / "meta.json").write_text("{}")
    (run.model_dir / "LATEST").write_text("v0001")
    agent = Agent(context(config, run, "agent"))
    assert agent.cycle() is False  # logged, retried later, no exception


def test_aae_model_switch_trains_and_agent_publishes(make_config) -> None:
    """`training.model: aae` is the only change: the 3dAAE learns positions, LOF finds outliers."""
    from ddmd_stream.agent import Agent
    from ddmd_stream.train import Trainer

    config = make_config(**{**TINY, "training": {**TINY["training"], "model": "aae"}})
    run = prepare_run_dir(config)
    frames = synthetic_frames(80, 0, np.random.default_rng(5))
    writer = FrameWriter(run.adios_xml, config.streams.aggregator_io, run.aggregator_store(0))
    try:
        writer.write(frames)
        trainer = Trainer(context(config, run, "trainer"))
        assert trainer.window.variables == ["positions", "sim_id", "step"]  # + validation ids
        trainer.window.update()
        assert trainer.train_round() == 1
        version, path = latest_version(run.model_dir)
        meta = read_meta(path)
        assert meta["model"] == "aae" and np.isfinite(meta["val_loss"])
        saved = json.loads((path / "model.json").read_text())
        assert saved["format"] == "ddmd_stream.aae" and saved["num_points"] == N_RES
        assert saved["input_preparation"]["scale"] > 1.0  # Å; helices have a radius of several Å

        agent = Agent(context(config, run, "agent"))
        assert "positions" in agent.window.variables and "contact_map" not in agent.window.variables
        assert agent.detector.name == "lof"  # detector: auto → the 3dAAE's preferred detector
        assert agent.cycle()
        assert agent.model is not None and agent.model.input_field == "positions"
        catalog = OutlierCatalog(run.catalog_file).load()
        assert catalog.version == 1
        assert 1 <= len(catalog.records) <= config.agent.n_outliers
        assert all(record.model_version == version for record in catalog.records)
    finally:
        writer.close()


def test_restarted_trainer_continues_from_the_published_model(run_with_store) -> None:
    from ddmd_stream.train import Trainer

    config, run, writer = run_with_store
    writer.write(synthetic_frames(64, 0, np.random.default_rng(4)))
    first = Trainer(context(config, run, "trainer"))
    first.window.update()
    assert first.train_round() == 1
    published = read_meta(latest_version(run.model_dir)[1])["val_loss"]
    again = Trainer(context(config, run, "trainer"))  # the streaming trainer, restarted
    again.window.update()
    version = again.train_round()
    assert again.best_val <= published  # the bar it started from: the published loss
    again.ctx.events.flush()
    round_event = [e for e in read_events(again.ctx.dir / "events.jsonl")
                   if e["event"] == "train_round"][-1]
    assert np.isfinite(round_event["baseline"])  # judged against the published model
    newest_version, newest_path = latest_version(run.model_dir)
    if version is None:
        assert newest_version == 1  # nothing worse replaced it
    else:
        assert version == newest_version == 2
        assert read_meta(newest_path)["val_loss"] < round_event["baseline"]
