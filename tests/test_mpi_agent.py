"""The agent as an MPI task (`resources.agent.ranks: 2`): the same catalog as one rank, started
by the local engine's mpiexec command line and by RADICAL-Pilot's MPI launch method."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from test_train_agent import TINY, context, synthetic_frames

from ddmd_stream.catalog import OutlierCatalog
from ddmd_stream.config import ConfigError
from ddmd_stream.events import read_events
from ddmd_stream.rundir import RunDir
from ddmd_stream.streams import FrameWriter
from ddmd_stream.task import TaskFile
from ddmd_stream.workflow.plan import TaskPlan, TaskSpec
from ddmd_stream.workflow.prepare import prepare_run_dir, task_spec

FRAMES = 240
RANKS = {"resources": {"agent": {"ranks": 2}}}


def prepared_run(make_config, engine: str = "local"):
    """A run with one store of FRAMES frames and one published model; the agent has 2 ranks."""
    from ddmd_stream.train import Trainer

    config = make_config(**TINY, **RANKS, workflow={"engine": engine, "duration_s": 300})
    run = prepare_run_dir(config)
    with FrameWriter(run.adios_xml, config.streams.aggregator_io,
                     run.aggregator_store(0)) as writer:
        writer.write(synthetic_frames(FRAMES, 0, np.random.default_rng(7)))
    trainer = Trainer(context(config, run, "trainer"))
    trainer.window.update()
    assert trainer.train_round() == 1
    return config, run


def one_rank_catalog(config, run: RunDir):
    """The catalog one in-process rank publishes on the prepared run (then removed again)."""
    from ddmd_stream.agent import Agent

    agent = Agent(context(config, run, "agent"))
    assert agent.cycle()
    agent.window.close()
    catalog = OutlierCatalog(run.catalog_file)
    published = catalog.load()
    for path in (run.catalog_file, catalog.previous_path):
        path.unlink(missing_ok=True)
    return published


def agent_task(config, run: RunDir) -> TaskSpec:
    """The agent's task spec, with a task file for one cycle (sequential mode's `once`)."""
    task_file = run.task_file("agent", 0)
    TaskFile("agent", 0, run.root, time.time() + 300, [], once=True).save(task_file)
    return task_spec(config, run, "agent", 0, task_file)


def assert_same_catalog(one, two) -> None:
    assert len(one.records) >= 1
    assert [(r.sim_id, r.step) for r in two.records] == [(r.sim_id, r.step) for r in one.records]
    np.testing.assert_allclose([r.score for r in two.records], [r.score for r in one.records],
                               rtol=1e-4, atol=1e-5)
    for a, b in zip(one.records, two.records, strict=True):
        np.testing.assert_array_equal(a.positions, b.positions)


def rank_one_encoded(run: RunDir) -> int:
    """Frames rank 1 encoded, from its own events file."""
    path = run.task_dir("agent", 0) / "rank-1" / "events.jsonl"
    return sum(e.get("frames", 0) for e in read_events(path) if e["event"] == "encode")


@pytest.mark.timeout(180)
def test_two_ranks_publish_the_catalog_of_one(make_config) -> None:
    config, run = prepared_run(make_config)
    one = one_rank_catalog(config, run)
    spec = agent_task(config, run)
    assert Path(spec.executable).name == "mpiexec" and spec.arguments[:2] == ["-n", "2"]
    done = subprocess.run(spec.command_line, cwd=spec.workdir, capture_output=True, text=True,
                          timeout=150, env={**os.environ, **spec.environment})
    assert done.returncode == 0, done.stderr[-3000:]
    two = OutlierCatalog(run.catalog_file).load()
    assert_same_catalog(one, two)
    assert rank_one_encoded(run) == FRAMES // 2  # rank 1 encoded its half of the window
    events = read_events(run.task_dir("agent", 0) / "events.jsonl")
    assert [e["event"] for e in events].count("task_start") == 1  # rank 1 keeps its own files


def test_ranks_only_for_the_agent_and_local_needs_an_mpiexec(make_config, tmp_path,
                                                            monkeypatch) -> None:
    with pytest.raises(ConfigError, match="ranks"):
        make_config(resources={"sim": {"ranks": 2}})
    config = make_config(resources={"agent": {"ranks": 2, "python": "/nonexistent/py"}})
    run = RunDir(tmp_path / "plan")
    monkeypatch.setenv("PATH", str(tmp_path))  # no mpiexec on PATH nor beside the interpreter
    with pytest.raises(ConfigError, match=r"resources\.agent\.ranks: 2 needs an mpiexec"):
        task_spec(config, run, "agent", 0, run.task_file("agent", 0))


@pytest.mark.timeout(420)
def test_entk_launches_the_agent_as_an_mpi_task(make_config) -> None:
    from ddmd_stream.workflow.entk import run_entk

    config, run = prepared_run(make_config, engine="entk")
    one = one_rank_catalog(config, run)
    spec = agent_task(config, run)
    assert spec.ranks == 2 and spec.command_line[1:3] == ["-m", "ddmd_stream.agent"]
    states = run_entk(TaskPlan([spec], run.root), config.resources, 0, lambda *_: None)
    log = (spec.workdir / "stderr").read_text() if (spec.workdir / "stderr").exists() else ""
    assert run.catalog_file.exists(), f"{states}\n{log[-3000:]}"
    assert_same_catalog(one, OutlierCatalog(run.catalog_file).load())
    assert rank_one_encoded(run) == FRAMES // 2
