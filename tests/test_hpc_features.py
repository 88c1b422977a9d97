"""What HPC users rely on: per-role launch settings, node-local storage, many starting structures,
explicit solvent."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import wait_for
from openmm import app, unit

from ddmd_stream import launch
from ddmd_stream.catalog import OutlierCatalog, OutlierRecord
from ddmd_stream.config import ConfigError, parse_config
from ddmd_stream.events import read_run_events
from ddmd_stream.streams import read_store
from ddmd_stream.task import TaskContext, TaskFile
from ddmd_stream.workflow.local import start_task
from ddmd_stream.workflow.prepare import prepare, prepare_run_dir

ROOT = Path(__file__).resolve().parent.parent
FS_PEPTIDE = ROOT / "ddmd_stream" / "data" / "fs-peptide.pdb"

ROLE_SETTINGS = {
    "pre_exec": ["echo common"],
    "environment": {"DDMD_COMMON": "1"},
    "sim": {"cpus": 2, "pre_exec": ["module load cuda"], "environment": {"OMP_NUM_THREADS": "2"}},
    "trainer": {"pre_exec": ["source /opt/venv/bin/activate"], "python": "/opt/venv/bin/python"},
}


def test_role_settings_reach_entk_tasks_and_dry_run(make_config, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from ddmd_stream.workflow.entk import build_task

    config = make_config(resources=ROLE_SETTINGS)
    plan = prepare(config)
    by_name = {spec.name: spec for spec in plan.tasks}
    sim = build_task(by_name["sim-0000"])
    assert sim.pre_exec == ["echo common", "module load cuda"]
    assert sim.environment["OMP_NUM_THREADS"] == "2" and sim.environment["DDMD_COMMON"] == "1"
    assert sim.cpu_reqs["cpu_threads"] == 2
    trainer = build_task(by_name["trainer-0000"])
    assert trainer.executable == "/opt/venv/bin/python"
    assert trainer.pre_exec == ["echo common", "source /opt/venv/bin/activate"]

    data = yaml.safe_load((config.workflow.run_dir / "config.yaml").read_text())
    data["workflow"]["run_dir"] = str(tmp_path / "dry")
    config_file = tmp_path / "dry.yaml"
    config_file.write_text(yaml.safe_dump(data))
    assert launch.main([str(config_file), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "pre_exec: module load cuda" in out and "env: OMP_NUM_THREADS=2" in out
    assert "/opt/venv/bin/python -m ddmd_stream.train" in out


@pytest.mark.parametrize("bad, field", [
    ({"sim": {"pre_exec": [""]}}, "resources.sim.pre_exec.0"),
    ({"pre_exec": [5]}, "resources.pre_exec.0"),
    ({"agent": {"environment": {"X": ["list"]}}}, "resources.agent.environment.X"),
])
def test_bad_role_settings_are_clear(tmp_path: Path, bad: dict, field: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"resources": bad}, "presets.yaml", tmp_path)
    assert field in str(error.value) and "presets.yaml" in str(error.value)


def test_node_local_storage_holds_nothing_needed_after_the_run(make_config, processes,
                                                              tmp_path: Path) -> None:
    scratch = tmp_path / "node-local"
    config = make_config(workflow={"duration_s": 20}, streams={"node_local_path": str(scratch)})
    plan = prepare(config)
    for spec in plan.tasks:
        if spec.role in ("aggregator", "sim"):
            processes.append(start_task(spec))
    saw_contact = wait_for(lambda: any(scratch.rglob("sim-*.sst")), timeout_s=60)
    for process in processes:
        assert process.wait(timeout=120) == 0
    assert saw_contact, "SST contact files did not go to node-local storage"
    assert (scratch / "tmp" / "sim-0000").is_dir()  # task temporary files went there too
    shutil.rmtree(scratch)  # node-local storage is gone after the job
    run = config.workflow.run_dir
    stored = read_store(run / "stream" / "agg-0000.bp", ["sim_id"])
    assert set(stored["sim_id"].tolist()) == {0, 1}
    assert any(e["event"] == "stream_closed" for e in read_run_events(run))


def write_shifted_pdb(source: Path, target: Path, shift_angstrom: float) -> np.ndarray:
    pdb = app.PDBFile(str(source))
    positions = pdb.getPositions(asNumpy=True).value_in_unit(unit.angstrom) + shift_angstrom
    with open(target, "w") as out:
        app.PDBFile.writeFile(pdb.topology, positions * unit.angstrom, out)
    return positions / 10.0  # nm


def test_three_structures_start_three_simulations(make_config, tmp_path: Path) -> None:
    from ddmd_stream.sim import StreamingSimulation

    folder = tmp_path / "starts"
    folder.mkdir()
    expected = [write_shifted_pdb(FS_PEPTIDE, folder / f"start-{i}.pdb", 3.0 * i) for i in range(3)]
    config = make_config(simulation={"num_simulations": 3, "initial_structures": str(folder)})
    assert [p.name for p in config.simulation.structures()] == ["start-0.pdb", "start-1.pdb",
                                                              "start-2.pdb"]
    run = prepare_run_dir(config)
    for sim_id in range(3):
        ctx = TaskContext(TaskFile("sim", sim_id, run.root, time.time() + 60), config)
        sim = StreamingSimulation(ctx)
        positions = sim.simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
        assert sim.structure_id == sim_id
        np.testing.assert_allclose(positions.value_in_unit(unit.nanometer), expected[sim_id],
                                   atol=1e-4)


def test_restart_uses_the_outliers_structure(make_config, tmp_path: Path) -> None:
    from ddmd_stream.sim import StreamingSimulation

    config = make_config(simulation={"num_simulations": 2, "reference_pdb": str(FS_PEPTIDE),
                                     "initial_structures": [str(FS_PEPTIDE), str(FS_PEPTIDE)]})
    run = prepare_run_dir(config)
    sim = StreamingSimulation(TaskContext(TaskFile("sim", 0, run.root, time.time() + 60), config))
    other = write_shifted_pdb(FS_PEPTIDE, tmp_path / "other.pdb", 1.0).astype(np.float32)
    OutlierCatalog(run.catalog_file).publish(
        [OutlierRecord(sim_id=1, step=10, positions=other, rmsd=1.0, structure_id=1)])
    step_before = sim.simulation.currentStep
    assert sim.restart(segment=1) is not None
    assert sim.structure_id == 1 and sim.simulation.currentStep == step_before


def test_explicit_solvent_restart_reproduces_positions_and_box(make_config) -> None:
    from ddmd_stream.sim import StreamingSimulation

    config = make_config(simulation={"forcefield": ["amber99sbildn.xml", "tip3p.xml"],
                                     "solvent": "explicit", "report_interval_ps": 0.01})
    run = prepare_run_dir(config)
    sim = StreamingSimulation(TaskContext(TaskFile("sim", 0, run.root, time.time() + 60), config))
    frames: list[dict] = []
    sim._send = frames.append  # collect frames instead of streaming them
    sim.reporter.sink = frames.append
    sim.simulation.step(20)
    frame = frames[-1]
    state = sim.simulation.context.getState(getPositions=True)
    box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    np.testing.assert_allclose(frame["box"], box, rtol=1e-6)  # the box travels with frames
    record = OutlierRecord(sim_id=0, step=int(frame["step"]), positions=frame["all_positions"],
                           rmsd=float(frame["rmsd"]), velocities=frame["velocities"],
                           box=frame["box"])
    sim.simulation.step(10)
    sim.apply_restart(record)
    after = sim.simulation.context.getState(getPositions=True)
    np.testing.assert_allclose(after.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                               frame["all_positions"], atol=1e-6)
    after_box = after.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    np.testing.assert_allclose(after_box, box, rtol=1e-6)  # NPT: the box changed meanwhile
