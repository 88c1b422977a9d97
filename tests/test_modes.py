"""Workflow modes besides streaming: sequential (DeepDriveMD-F, through RADICAL-EnTK) and plain
MD (the unsteered control, on the local engine to keep the suite short), end to end with
reports; plus the pieces they are made of (plan per mode, stage schedule, checkpoints)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import BP5_XML, SST_XML, start_launcher, tiny_run

from ddmd_stream.catalog import OutlierCatalog
from ddmd_stream.events import read_run_events
from ddmd_stream.ml.registry import latest_version
from ddmd_stream.report import __main__ as report
from ddmd_stream.rundir import RunDir
from ddmd_stream.streams import BatchingWriter, read_store
from ddmd_stream.task import TaskFile
from ddmd_stream.workflow.cleanup import find_leftovers, kill_leftovers
from ddmd_stream.workflow.prepare import plan_tasks
from ddmd_stream.workflow.sequential import Schedule


def _launch(tmp_path: Path, workflow: dict, xml: Path, timeout_s: float,
            simulation: dict | None = None) -> tuple[Path, str]:
    run = tmp_path / "run"
    simulation = {"report_interval_ps": 0.1, **(simulation or {})}  # 20 frames per segment
    config = tiny_run(run, xml, workflow=workflow, simulation=simulation)
    launcher = start_launcher(config, tmp_path / "config.yaml")
    try:
        output, _ = launcher.communicate(timeout=timeout_s)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
            kill_leftovers(run)
    assert launcher.returncode == 0, output[-3000:]
    return run, output


def _report_ok(run: Path) -> dict:
    assert report.main([str(run)]) == 0
    summary = json.loads((run / "report" / "summary.json").read_text())
    assert summary["state"] == "finished"
    return summary


def test_sequential_mode_through_entk(tmp_path: Path) -> None:
    """sim → train → agent → sim (restarting from the catalog) → agent, as EnTK stages."""
    started = time.monotonic()
    # the SST XML on purpose: sequential mode never opens the SST IO
    run, output = _launch(
        tmp_path,
        {"engine": "entk", "mode": "sequential", "duration_s": 420, "train_every": 2,
         "max_iterations": 2},
        SST_XML,
        timeout_s=480,  # ~1.5 min on an idle 2-core machine; the margin is for a busy one
        # binary contact maps of 2 ps at 300 K repeat so much that DBSCAN may see no outlier
        # (then nothing restarts); 4 ps at 450 K vary enough on every machine tried
        simulation={"report_interval_ps": 0.2, "segment_length_ns": 0.004, "temperature_k": 450},
    )
    elapsed = time.monotonic() - started
    events = read_run_events(run)
    starts = [(e["task"], e["t"]) for e in events if e["event"] == "task_start"]
    order = [task.split("-")[0] for task, _ in sorted(starts, key=lambda s: s[1])]
    # iteration 1: sims, trainer, agent; iteration 2 (train_every=2): sims, agent
    assert order == ["sim", "sim", "trainer", "agent", "sim", "sim", "agent"], order
    assert "sequential run ends: 2 iterations done" in output
    assert not list(run.glob("tasks/aggregator-*")) and not list(run.glob("stream/*.sst"))
    for sim_id in (0, 1):
        stored = read_store(RunDir(run).sim_store(sim_id), ["sim_id", "segment_id", "step"])
        assert set(stored["sim_id"].tolist()) == {sim_id}
        assert stored["segment_id"].tolist() == [0] * 20 + [1] * 20
        assert RunDir(run).sim_checkpoint(sim_id).is_file()
    restarts = [e for e in events if e["event"] == "restart"]
    assert {e["task"] for e in restarts} == {"sim-0000", "sim-0001"}
    assert all(e["segment"] == 1 for e in restarts)
    assert latest_version(run / "model") is not None
    assert OutlierCatalog(run / "catalog" / "outliers.pkl").load().version >= 1
    assert find_leftovers(run) == []
    summary = _report_ok(run)
    assert summary["io"]["segments"] == 4 and summary["io"]["restarts"] == 2
    assert summary["io"]["sim_bytes_written_to_disk"] > 0
    print(f"sequential EnTK run: {elapsed:.0f} s")


def test_plain_mode_runs_without_steering(tmp_path: Path) -> None:
    """Simulations + aggregator only; no trainer, no agent, no restarts (local engine)."""
    run, _ = _launch(tmp_path, {"engine": "local", "mode": "plain", "duration_s": 30}, SST_XML,
                     timeout_s=150, simulation={"segment_length_ns": 0.0005})  # 250 steps
    tasks = sorted(p.name for p in (run / "tasks").iterdir())
    assert tasks == ["aggregator-0000", "sim-0000", "sim-0001"]
    events = read_run_events(run)
    assert not [e for e in events if e["event"] == "restart"]
    segments = [e for e in events if e["event"] == "segment"]
    assert {e["task"] for e in segments} == {"sim-0000", "sim-0001"}
    stored = read_store(run / "stream" / "agg-0000.bp", ["sim_id", "segment_id"])
    assert set(stored["sim_id"].tolist()) == {0, 1}
    assert stored["segment_id"].max() >= 1  # continued past the first segment
    assert not (run / "model" / "LATEST").exists()
    assert not (run / "catalog" / "outliers.pkl").exists()
    assert find_leftovers(run) == []
    summary = _report_ok(run)
    assert {c["component"] for c in summary["components"]} == {"Simulation", "Aggregator"}


# --------------------------------------------------------------------------- pieces


@pytest.mark.parametrize(
    ("mode", "roles", "once"),
    [
        ("streaming", ["aggregator", "sim", "sim", "trainer", "agent"], False),
        ("plain", ["aggregator", "sim", "sim"], False),
        ("sequential", ["sim", "sim", "trainer", "agent"], True),
    ],
)
def test_plan_per_mode(make_config, mode: str, roles: list[str], once: bool) -> None:
    config = make_config(workflow={"mode": mode})
    run = RunDir(config.workflow.run_dir)
    run.create()
    plan = plan_tasks(config, run, time.time() + 60)
    assert [t.role for t in plan.tasks] == roles
    assert {TaskFile.load(run.task_file(t.role, t.index)).once for t in plan.tasks} == {once}


def test_schedule_order_train_every_and_stop(make_config, tmp_path: Path) -> None:
    config = make_config(workflow={"mode": "sequential", "train_every": 2, "max_iterations": 3})
    run = RunDir(config.workflow.run_dir)
    run.create()
    plan = plan_tasks(config, run, time.time() + 60, write=False)
    schedule = Schedule(plan, config.workflow, time.time() + 60)
    names = []
    while (stage := schedule.next_stage()) is not None:
        names.append(stage[0])
    assert names == ["sim.1", "trainer.1", "agent.1", "sim.2", "agent.2",
                     "sim.3", "trainer.3", "agent.3"]
    assert len(schedule.roles(1)) == 3 and schedule.by_role["sim"][0].name == "sim-0000"
    over = Schedule(plan, config.workflow, time.time() - 1)  # deadline passed
    assert over.next_stage() is None
    stopping = Schedule(plan, config.workflow, time.time() + 60)
    assert stopping.next_stage()[0] == "sim.1"
    run.stop_file.write_text("stop\n")
    assert stopping.next_stage() is None


def test_checkpoint_round_trip(make_config) -> None:
    from ddmd_stream.md.checkpoint import load_state, restore_state, save_state
    from ddmd_stream.md.system import build_simulation, load_pdb

    config = make_config()
    sim = config.simulation
    simulation, _ = build_simulation(sim, load_pdb(sim.pdb_file), seed=1)
    simulation.step(20)
    path = Path(config.workflow.run_dir) / "state.npz"
    save_state(path, simulation, segment=3, structure_id=0)
    saved = load_state(path)
    assert saved.segment == 3 and saved.step == 20 and saved.box_nm is None
    again, _ = build_simulation(sim, load_pdb(sim.pdb_file), seed=2)
    restore_state(again, saved)
    state = again.context.getState(getPositions=True)
    assert again.currentStep == 20
    np.testing.assert_allclose(state.getPositions(asNumpy=True)._value, saved.positions_nm)
    assert load_state(path.with_name("missing.npz")) is None


def test_batching_writer_writes_one_step_per_flush(tmp_path: Path) -> None:
    store = tmp_path / "agg-sim-0000.bp"
    for _ in range(2):  # a second stage appends to the same store
        writer = BatchingWriter(BP5_XML, "AggregatorOutput", store, append=True)
        for step in range(3):
            writer.write({"step": np.array([step]), "x": np.zeros((1, 2), np.float32)})
        assert writer.flush() == 3 and writer.frames_written == 3
        writer.write({"step": np.array([9]), "x": np.ones((1, 2), np.float32)})
        writer.close()  # flushes the rest
    stored = read_store(store, ["step"])
    assert stored["step"].tolist() == [0, 1, 2, 9] * 2
