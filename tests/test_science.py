"""Scientific defaults and checks: minimization, clashes, the steering objective, contact atoms,
NPT for explicit solvent, held-out validation blocks, deterministic validation, the controls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openmm
import pytest

from ddmd_stream.config import PACKAGE_DATA, SimulationConfig, check_inputs, parse_config
from ddmd_stream.detectors import UniformDetector
from ddmd_stream.md.geometry import dihedrals, heavy_atom_indices, phi_psi_atoms, select_atoms
from ddmd_stream.md.reporter import FrameReporter
from ddmd_stream.md.system import (
    StructureError,
    build_simulation,
    build_system,
    load_pdb,
    prepare_start,
    reference_ca_angstrom,
)
from ddmd_stream.train import split_train_val

ALANINE = PACKAGE_DATA / "alanine-dipeptide.pdb"
C7EQ = PACKAGE_DATA / "alanine-dipeptide-c7eq.pdb"
FS_PEPTIDE = PACKAGE_DATA / "fs-peptide.pdb"
VACUUM = {"solvent": "vacuum", "forcefield": ["amber99sbildn.xml"], "platform": "Reference"}
REPO = Path(__file__).resolve().parents[1]


def _energy(simulation) -> float:
    state = simulation.context.getState(getEnergy=True)
    return state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)


def test_start_is_minimized_and_equilibrated() -> None:
    config = SimulationConfig(pdb_file=ALANINE, equilibration_ps=0.2, **VACUUM)
    simulation, _ = build_simulation(config, load_pdb(ALANINE), seed=1)
    before = _energy(simulation)
    minimized = config.model_copy(update={"equilibration_ps": 0.0})
    energy = prepare_start(simulation, minimized, ALANINE)
    assert energy < before - 10  # the packaged PDB is not at a minimum
    assert simulation.currentStep == 0
    prepare_start(simulation, config, ALANINE, seed=3)
    assert simulation.currentStep == 0  # equilibration is not production


def test_clash_is_a_clear_error(tmp_path: Path) -> None:
    lines = ALANINE.read_text().splitlines()
    atoms = [i for i, line in enumerate(lines) if line.startswith("ATOM")]
    first = lines[atoms[0]]
    clashing = lines[atoms[1]][:30] + first[30:54] + lines[atoms[1]][54:]
    lines[atoms[1]] = clashing  # atom 2 exactly on atom 1
    pdb_file = tmp_path / "clash.pdb"
    pdb_file.write_text("\n".join(lines) + "\n")
    config = SimulationConfig(pdb_file=pdb_file, **VACUUM)
    simulation, _ = build_simulation(config, load_pdb(pdb_file), seed=1)
    with pytest.raises(StructureError, match=r"clash\.pdb.*not finite"):
        prepare_start(simulation, config, pdb_file)


def _config(tmp_path: Path, **sections) -> object:
    return parse_config(sections, "run.yaml", tmp_path)


def test_rmsd_objective_needs_another_reference(tmp_path: Path) -> None:
    rmsd = {"agent": {"ranking": "rmsd"}}
    problems = check_inputs(_config(tmp_path, **rmsd))
    assert any("reference_pdb" in p and "ranking: score" in p for p in problems)
    same = {"simulation": {"pdb_file": str(FS_PEPTIDE), "reference_pdb": str(FS_PEPTIDE)}}
    problems = check_inputs(_config(tmp_path, **rmsd, **same))
    assert any("starting structure" in p for p in problems)
    folded = {"simulation": {"pdb_file": str(PACKAGE_DATA / "1FME-unfolded.pdb"),
                             "reference_pdb": str(PACKAGE_DATA / "1FME-folded.pdb")}}
    config = _config(tmp_path, **rmsd, **folded)
    assert not [p for p in check_inputs(config) if "ranking" in p]
    assert config.ranking == "rmsd"


def test_objective_defaults_to_novelty_without_reference(tmp_path: Path) -> None:
    assert _config(tmp_path).ranking == "score"
    folded = {"pdb_file": str(PACKAGE_DATA / "1FME-unfolded.pdb"),
              "reference_pdb": str(PACKAGE_DATA / "1FME-folded.pdb")}
    assert _config(tmp_path, simulation=folded).ranking == "rmsd"


def test_bba_preset_is_the_papers_setup() -> None:
    from ddmd_stream.config import load_config

    config = load_config(REPO / "launch" / "bba.yaml")
    sim = config.simulation
    assert sim.pdb_file.name == "1FME-unfolded.pdb" and sim.reference_pdb.name == "1FME-folded.pdb"
    assert (sim.report_interval_ps, sim.segment_length_ns) == (50, 10)
    assert config.training.cvae.conv_filters == [64, 64, 64, 64]
    assert config.ranking == "rmsd"
    assert not [p for p in check_inputs(config) if "ranking" in p]


def test_heavy_atom_contact_map_of_alanine_dipeptide() -> None:
    pdb = load_pdb(ALANINE)
    heavy = heavy_atom_indices(pdb.topology)
    assert len(heavy) == 10  # ACE: CH3 C O; ALA: N CA CB C O; NME: N CH3
    assert select_atoms(pdb.topology, [0, 4]).tolist() == [0, 4]
    with pytest.raises(ValueError, match="within"):
        select_atoms(pdb.topology, [99])
    config = SimulationConfig(pdb_file=ALANINE, **VACUUM)
    simulation, _ = build_simulation(config, pdb, seed=1)
    frames: list[dict] = []
    ca = select_atoms(pdb.topology, "ca")
    reporter = FrameReporter(5, frames.append, ca, reference_ca_angstrom(ALANINE),
                             cutoff_angstrom=3.0, positions=heavy, contact_indices=heavy)
    simulation.reporters.append(reporter)
    simulation.step(10)
    assert frames[-1]["contact_map"].shape == (10, 10)
    assert frames[-1]["positions"].shape == (10, 3)
    assert 10 < frames[-1]["contact_map"].sum() < 100  # bonded pairs in, far pairs out


def test_c7eq_start_is_in_c7eq() -> None:
    pdb = load_pdb(C7EQ)
    positions = pdb.getPositions(asNumpy=True).value_in_unit(openmm.unit.angstrom)
    phi, psi = dihedrals(np.asarray(positions)[None], phi_psi_atoms(pdb.topology))[0]
    assert -100 < phi < -60 and 40 < psi < 100


def test_explicit_solvent_runs_at_constant_pressure() -> None:
    config = SimulationConfig(pdb_file=ALANINE, solvent="explicit",
                              forcefield=["amber99sbildn.xml", "tip3p.xml"])
    _, system = build_system(config, load_pdb(ALANINE))
    barostats = [f for f in system.getForces() if isinstance(f, openmm.MonteCarloBarostat)]
    assert len(barostats) == 1
    assert barostats[0].getDefaultPressure().value_in_unit(openmm.unit.bar) == pytest.approx(1.0)
    nvt = config.model_copy(update={"pressure_bar": None})
    _, system = build_system(nvt, load_pdb(ALANINE))
    assert not any(isinstance(f, openmm.MonteCarloBarostat) for f in system.getForces())


def test_velocities_are_copied_half_the_time_by_default() -> None:
    assert SimulationConfig().velocity_copy_probability == 0.5


def test_validation_is_held_out_in_blocks_per_simulation() -> None:
    sims = np.repeat([0, 1], 100)
    steps = np.tile(np.arange(100) * 10, 2)  # a frame every 10 steps
    train, val = split_train_val(sims, steps, block_steps=200, fraction=0.2)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 200
    assert 0.1 <= len(val) / 200 <= 0.3
    is_val = np.zeros(200, bool)
    is_val[val] = True
    for sim in (0, 1):  # runs of 20 consecutive frames (200 steps) of one simulation
        runs = is_val[sims == sim].reshape(-1, 20)
        assert np.all(runs.all(axis=1) | ~runs.any(axis=1))
    shuffled = np.random.default_rng(0).permutation(200)  # a frame's side is its own
    _, again_val = split_train_val(sims[shuffled], steps[shuffled], 200, 0.2)
    assert sorted(shuffled[again_val].tolist()) == sorted(val.tolist())


def test_validation_loss_is_deterministic() -> None:
    from ddmd_stream.config import TrainingConfig
    from ddmd_stream.ml.base import model_for

    rng = np.random.default_rng(0)
    maps = (rng.random((40, 12, 12)) < 0.3).astype(np.uint8)
    training = TrainingConfig(cvae={"conv_filters": [4, 4], "conv_kernels": [3, 3],
                                    "conv_strides": [1, 2], "dense_units": 8})
    model = model_for(training, maps[:1], seed=1)
    first = model.evaluate(maps, batch_size=16)["loss"]
    assert model.evaluate(maps, batch_size=16)["loss"] == pytest.approx(first, rel=1e-6)


def test_uniform_control_draws_distinct_frames() -> None:
    detection = UniformDetector(5, seed=1).detect(np.zeros((50, 3)))
    assert len(set(detection.indices.tolist())) == 5 and np.all(detection.scores == 0)
    assert len(UniformDetector(5, seed=1).detect(np.zeros((3, 3)))) == 3


def test_total_ns_target_stops_the_run(tmp_path: Path) -> None:
    from ddmd_stream.workflow.progress import Summary, stop_reason

    config = _config(tmp_path, workflow={"stop_total_ns": 1.5})
    summary = Summary(elapsed_s=1, remaining_s=1, sims_running=2, sims_total=2,
                      ns_simulated=1.0, frames_aggregated=0, model_version=None,
                      best_val_loss=None, catalog_version=None, outliers=None, min_rmsd=None)
    assert stop_reason(summary, config) is None
    summary.ns_simulated = 1.6
    assert "1.5" in stop_reason(summary, config)


def test_box_travels_with_frames_and_restarts(make_config) -> None:
    import time

    from openmm import unit

    from ddmd_stream.catalog import OutlierCatalog, OutlierRecord
    from ddmd_stream.sim import StreamingSimulation
    from ddmd_stream.task import TaskContext, TaskFile
    from ddmd_stream.workflow.prepare import prepare_run_dir

    config = make_config(simulation={"pdb_file": str(ALANINE), "solvent": "explicit",
                                     "forcefield": ["amber99sbildn.xml", "tip3p.xml"]})
    run = prepare_run_dir(config)
    ctx = TaskContext(TaskFile("sim", 0, run.root, time.time() + 60), config)
    sim = StreamingSimulation(ctx)
    frames: list[dict] = []
    sim.reporter.sink = frames.append
    sim.start()  # minimized: water at 1 bar keeps the box near its size
    sim.simulation.step(sim.reporter.interval_steps)
    state = sim.simulation.context.getState()
    box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    np.testing.assert_allclose(frames[-1]["box"], box, rtol=1e-6)
    n_atoms = sim.simulation.topology.getNumAtoms()
    positions = frames[-1]["all_positions"]
    bigger = (np.asarray(box) * 1.02).astype(np.float32)
    OutlierCatalog(run.catalog_file).publish(
        [OutlierRecord(sim_id=1, step=5, positions=positions, rmsd=1.0, box=bigger)])
    assert positions.shape == (n_atoms, 3)
    assert sim.restart(segment=1) is not None
    after = sim.simulation.context.getState().getPeriodicBoxVectors(asNumpy=True)
    np.testing.assert_allclose(after.value_in_unit(unit.nanometer), bigger, rtol=1e-5)


def test_report_names_the_objective(tmp_path: Path) -> None:
    from ddmd_stream.report.metrics import steering_objective

    folded = {"pdb_file": str(PACKAGE_DATA / "1FME-unfolded.pdb"),
              "reference_pdb": str(PACKAGE_DATA / "1FME-folded.pdb")}
    assert "1FME-folded.pdb" in steering_objective(_config(tmp_path, simulation=folded))
    assert steering_objective(_config(tmp_path)).startswith("novelty")
    control = _config(tmp_path, agent={"detector": "uniform"})
    assert "control" in steering_objective(control)
    assert "plain" in steering_objective(_config(tmp_path, workflow={"mode": "plain"}))


def test_simulations_can_yield_cpu_to_the_steering(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    config = _config(tmp_path, resources={"sim": {"nice": 10}})
    assert (config.resources.sim.nice, config.resources.trainer.nice) == (10, 0)
    with pytest.raises(Exception, match="nice"):
        _config(tmp_path, resources={"sim": {"nice": 40}})
    child = "import os; from ddmd_stream.task import _lower_priority; _lower_priority(3); " \
            "print(os.nice(0))"
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                         check=True).stdout
    assert int(out) == os.nice(0) + 3
