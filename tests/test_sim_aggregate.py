"""Simulations → SST → aggregator → BP5 with real OpenMM and ADIOS2; restarts from the catalog."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import BP5_XML, SST_XML, wait_for

from ddmd_stream.accounting import account_run
from ddmd_stream.catalog import OutlierCatalog, OutlierRecord
from ddmd_stream.config import RunConfig
from ddmd_stream.events import read_run_events
from ddmd_stream.rundir import RunDir
from ddmd_stream.streams import read_store
from ddmd_stream.workflow.local import start_task
from ddmd_stream.workflow.prepare import prepare


def start_roles(config: RunConfig, roles: tuple[str, ...], processes: list) -> dict[str, object]:
    plan = prepare(config)
    started = {}
    for spec in plan.tasks:
        if spec.role in roles:
            started[spec.name] = start_task(spec)
            processes.append(started[spec.name])
    return started


def independent_contact_map(ca: np.ndarray, cutoff: float) -> np.ndarray:
    distances = np.sqrt(((ca[:, None, :] - ca[None, :, :]) ** 2).sum(-1))
    return (distances < cutoff).astype(np.uint8)


def independent_rmsd(x: np.ndarray, ref: np.ndarray) -> float:
    x = x - x.mean(0)
    ref = ref - ref.mean(0)
    u, _, vt = np.linalg.svd(x.T @ ref)
    sign = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1, 1, sign]) @ vt
    return float(np.sqrt(((x @ rotation - ref) ** 2).sum(1).mean()))


@pytest.mark.parametrize("xml", [SST_XML, BP5_XML], ids=["sst", "bp5"])
def test_two_simulations_stream_every_frame(make_config, processes, xml: Path) -> None:
    config = make_config(workflow={"duration_s": 20}, streams={"adios_xml": str(xml)})
    tasks = start_roles(config, ("aggregator", "sim"), processes)
    codes = {name: process.wait(timeout=120) for name, process in tasks.items()}
    assert codes == dict.fromkeys(tasks, 0)

    run = config.workflow.run_dir
    stored = read_store(run / "stream" / "agg-0000.bp")
    closed = [e for e in read_run_events(run) if e["event"] == "stream_closed"]
    assert len(closed) == 2
    assert len(stored["sim_id"]) == sum(e["frames"] for e in closed) > 10
    assert set(stored["sim_id"].tolist()) == {0, 1}
    ids = list(zip(stored["sim_id"].tolist(), stored["step"].tolist(), strict=True))
    assert len(set(ids)) == len(ids), "a frame was stored twice"
    assert all(step % config.simulation.steps_per_report == 0 for _, step in ids)
    rows = account_run(RunDir(run))  # each simulation's ledger against the store
    assert [(r.streamed, r.duplicates, r.missing) for r in rows] == [
        (e["frames"], 0, 0) for e in sorted(closed, key=lambda e: e["task"])]

    world_writable = [p for p in run.rglob("*") if p.stat().st_mode & 0o002]
    assert not world_writable, world_writable

    from ddmd_stream.md.system import reference_ca_angstrom

    reference = reference_ca_angstrom(config.simulation.pdb_file)
    for index in range(0, len(ids), 7):
        ca = stored["positions"][index].astype(np.float64)
        expected = independent_contact_map(ca, config.simulation.contact_cutoff_angstrom)
        assert np.array_equal(stored["contact_map"][index], expected)
        assert stored["rmsd"][index] == pytest.approx(independent_rmsd(ca, reference), abs=1e-3)


def test_killed_simulation_leaves_aggregator_serving_others(make_config, processes) -> None:
    config = make_config(workflow={"duration_s": 40}, simulation={"num_simulations": 3})
    tasks = start_roles(config, ("aggregator", "sim"), processes)
    run = config.workflow.run_dir
    store = run / "stream" / "agg-0000.bp"

    def frames_of(sim_id: int) -> int:
        try:
            return int((read_store(store)["sim_id"] == sim_id).sum())
        except Exception:
            return 0

    assert wait_for(lambda: all(frames_of(i) > 2 for i in range(3)), timeout_s=60)
    tasks["sim-0001"].send_signal(signal.SIGKILL)
    tasks["sim-0001"].wait()
    time.sleep(2)
    before = {i: frames_of(i) for i in (0, 2)}
    assert wait_for(lambda: all(frames_of(i) > before[i] + 2 for i in (0, 2)), timeout_s=30)
    assert tasks["aggregator-0000"].poll() is None, "aggregator died with the simulation"
    (run / "STOP").write_text("test\n")
    assert tasks["aggregator-0000"].wait(timeout=60) == 0


def test_restart_from_catalog_entry(make_config, tmp_path: Path) -> None:
    from openmm import unit

    from ddmd_stream.sim import StreamingSimulation
    from ddmd_stream.task import TaskContext, TaskFile
    from ddmd_stream.workflow.prepare import prepare_run_dir

    config = make_config(simulation={"velocity_copy_probability": 1.0, "restart_policy": "rank"})
    run = prepare_run_dir(config)
    ctx = TaskContext(TaskFile("sim", 0, run.root, time.time() + 60), config)
    sim = StreamingSimulation(ctx)
    state = sim.simulation.context.getState(getPositions=True, getVelocities=True)
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer).astype(np.float32)
    shifted = positions + np.float32(0.05)
    velocities = np.full_like(positions, 0.1)
    OutlierCatalog(run.catalog_file).publish(
        [
            OutlierRecord(sim_id=1, step=500, positions=shifted, rmsd=1.5, velocities=velocities),
            OutlierRecord(sim_id=1, step=900, positions=positions, rmsd=3.0, velocities=velocities),
        ]
    )
    record = sim.restart(segment=1)
    assert record is not None and record.step == 500  # rank policy: lowest RMSD for sim 0
    after = sim.simulation.context.getState(getPositions=True, getVelocities=True)
    restored = after.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    # the catalog's coordinates, projected onto the bond constraints (applyConstraints)
    np.testing.assert_allclose(restored, shifted, atol=5e-4)
    system = sim.simulation.system
    for k in range(system.getNumConstraints()):
        i, j, length = system.getConstraintParameters(k)
        distance = np.linalg.norm(restored[i] - restored[j])
        assert distance == pytest.approx(length.value_in_unit(unit.nanometer), rel=1e-4)
    np.testing.assert_allclose(
        after.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond),
        velocities,
        atol=1e-6,
    )
    ctx.events.flush()
    restarts = [e for e in read_run_events(run.root) if e["event"] == "restart"]
    assert restarts and restarts[0]["source_step"] == 500


def test_empty_catalog_continues_from_own_state(make_config) -> None:
    from ddmd_stream.sim import StreamingSimulation
    from ddmd_stream.task import TaskContext, TaskFile
    from ddmd_stream.workflow.prepare import prepare_run_dir

    config = make_config()
    run = prepare_run_dir(config)
    sim = StreamingSimulation(TaskContext(TaskFile("sim", 0, run.root, time.time() + 60), config))
    assert sim.restart(segment=1) is None
