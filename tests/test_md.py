"""Tests of ddmd_stream.md: geometry against brute force, simulation setup, FrameReporter frames."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

from ddmd_stream.config import PACKAGE_DATA, SimulationConfig
from ddmd_stream.frames import frame_schema
from ddmd_stream.md.geometry import ca_indices, contact_map, kabsch_rmsd
from ddmd_stream.md.reporter import FrameReporter
from ddmd_stream.md.system import (
    StructureError,
    build_simulation,
    choose_platform,
    load_pdb,
    reference_ca_angstrom,
)

logger = logging.getLogger(__name__)

ALANINE = PACKAGE_DATA / "alanine-dipeptide.pdb"
FS_PEPTIDE = PACKAGE_DATA / "fs-peptide.pdb"
IMPLICIT_FF = ["amber99sbildn.xml", "amber99_obc.xml"]


# --------------------------------------------------------------------------- geometry


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A random proper rotation matrix (QR of a Gaussian matrix, determinant +1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def test_contact_map_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 20, size=(30, 3))
    cutoff = 8.0
    expected = np.zeros((30, 30), dtype=np.uint8)
    for i in range(30):
        for j in range(30):
            expected[i, j] = math.dist(coords[i], coords[j]) < cutoff
    result = contact_map(coords, cutoff)
    assert result.dtype == np.uint8 and result.shape == (30, 30)
    np.testing.assert_array_equal(result, expected)
    assert np.all(np.diag(result) == 1)
    np.testing.assert_array_equal(result, result.T)


def test_contact_map_cutoff_is_strict() -> None:
    coords = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 7.9, 0.0]])
    np.testing.assert_array_equal(contact_map(coords, 8.0), [[1, 0, 1], [0, 1, 0], [1, 0, 1]])
    with pytest.raises(ValueError):
        contact_map(coords[:, :2], 8.0)


def test_kabsch_rigid_copy_is_zero() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(scale=5.0, size=(21, 3))
    moved = reference @ _rotation(rng).T + np.array([10.0, -3.0, 7.0])
    assert kabsch_rmsd(moved, reference) == pytest.approx(0.0, abs=1e-6)
    assert kabsch_rmsd(reference, reference) == pytest.approx(0.0, abs=1e-9)


def test_kabsch_known_value_and_no_reflection() -> None:
    rng = np.random.default_rng(2)
    reference = rng.normal(scale=5.0, size=(10, 3))
    # Displace two atoms by +d and -d along x (centroid unchanged): rotating cannot help much,
    # so the Kabsch RMSD is at most the plain RMSD sqrt(2 d^2 / n).
    shifted = reference.copy()
    shifted[0, 0] += 1.0
    shifted[1, 0] -= 1.0
    plain = math.sqrt(2 * 1.0**2 / 10)
    value = kabsch_rmsd(shifted, reference)
    assert 0.0 < value <= plain + 1e-12
    # A mirror image is not a rigid motion: its RMSD must stay well above zero.
    mirrored = reference * np.array([-1.0, 1.0, 1.0])
    assert kabsch_rmsd(mirrored, reference) > 0.5
    # Exact value for a translated-and-rotated, uniformly scaled copy of a centred line.
    line = np.array([[-1.0, 0, 0], [1.0, 0, 0]])
    assert kabsch_rmsd(2 * line @ _rotation(rng).T + 5.0, line) == pytest.approx(1.0)


def test_kabsch_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        kabsch_rmsd(np.zeros((3, 3)), np.zeros((4, 3)))


def test_ca_indices() -> None:
    pdb = load_pdb(FS_PEPTIDE)
    indices = ca_indices(pdb.topology)
    assert indices.dtype == np.int64 and len(indices) == 21
    atoms = list(pdb.topology.atoms())
    assert all(atoms[i].name == "CA" for i in indices)
    # A calcium ion (one-atom residue named CA) and a CA-less topology.
    topology = app.Topology()
    chain = topology.addChain()
    residue = topology.addResidue("CA", chain)
    topology.addAtom("CA", app.Element.getBySymbol("Ca"), residue)
    with pytest.raises(ValueError, match="no CA atoms"):
        ca_indices(topology)


# --------------------------------------------------------------------------- structures


def test_load_pdb_missing(tmp_path: Path) -> None:
    path = tmp_path / "nope.pdb"
    with pytest.raises(StructureError, match=r"nope\.pdb") as info:
        load_pdb(path)
    assert "not found" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "content",
    [b"hello world\nthis is not a pdb\n", b"", b"\x00\xff\xfe garbage \x89PNG\r\n"],
)
def test_load_pdb_garbage(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.pdb"
    path.write_bytes(content)
    with pytest.raises(StructureError, match=r"garbage\.pdb") as info:
        load_pdb(path)
    assert "\n" not in str(info.value)
    assert any(word in str(info.value) for word in ("empty", "no ATOM", "cannot parse"))


def test_load_pdb_bad_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.pdb"
    path.write_text(
        "ATOM      1  CA  ALA A   1      xx.680  31.035  36.081  1.00  0.00           C\n"
    )
    with pytest.raises(StructureError, match=r"bad\.pdb: cannot parse as PDB"):
        load_pdb(path)


def test_load_pdb_directory(tmp_path: Path) -> None:
    with pytest.raises(StructureError, match=tmp_path.name):
        load_pdb(tmp_path)


def test_reference_ca_angstrom() -> None:
    reference = reference_ca_angstrom(FS_PEPTIDE)
    assert reference.shape == (21, 3)
    # First CA of fs-peptide, straight from the file (Å).
    line = next(ln for ln in FS_PEPTIDE.read_text().splitlines() if ln[12:16].strip() == "CA")
    expected = [float(line[30:38]), float(line[38:46]), float(line[46:54])]
    np.testing.assert_allclose(reference[0], expected, atol=1e-3)


# --------------------------------------------------------------------------- platforms


def test_choose_platform() -> None:
    platform, properties = choose_platform(SimulationConfig(platform="CPU", cpu_threads=1))
    assert platform.getName() == "CPU" and properties == {"Threads": "1"}
    platform, properties = choose_platform(SimulationConfig(platform="Reference"))
    assert platform.getName() == "Reference" and properties == {}
    platform, properties = choose_platform(SimulationConfig(platform="auto", precision="single"))
    assert platform.getName() in ("CUDA", "OpenCL", "CPU")
    if platform.getName() != "CPU":
        assert properties == {"Precision": "single"}


def test_named_platform_unavailable_is_clear() -> None:
    count = openmm.Platform.getNumPlatforms()
    names = {openmm.Platform.getPlatform(i).getName() for i in range(count)}
    if "CUDA" in names:
        pytest.skip("CUDA is available here")
    with pytest.raises(StructureError, match="CUDA"):
        choose_platform(SimulationConfig(platform="CUDA"))


# --------------------------------------------------------------------------- simulations


def _run_with_reporter(
    config: SimulationConfig,
    pdb_path: Path,
    steps: int,
    interval: int,
    positions: str,
    velocities: bool,
) -> tuple[app.Simulation, FrameReporter, list[dict], list[np.ndarray]]:
    pdb = load_pdb(pdb_path)
    simulation, _ = build_simulation(config, pdb, seed=7)
    indices = ca_indices(simulation.topology)
    frames: list[dict] = []
    truth: list[np.ndarray] = []  # all positions (Å) straight from the context at report time

    def sink(frame: dict) -> None:
        frames.append(frame)
        state = simulation.context.getState(getPositions=True)
        truth.append(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))

    reporter = FrameReporter(
        interval,
        sink,
        indices,
        reference_ca_angstrom(pdb_path),
        cutoff_angstrom=config.contact_cutoff_angstrom,
        positions=positions,  # type: ignore[arg-type]
        velocities=velocities,
        sim_id=3,
        segment_id=5,
    )
    simulation.reporters.append(reporter)
    simulation.step(steps)
    return simulation, reporter, frames, truth


def _check_frames(
    simulation: app.Simulation,
    reporter: FrameReporter,
    frames: list[dict],
    truth: list[np.ndarray],
    interval: int,
) -> None:
    n_atoms = simulation.topology.getNumAtoms()
    indices = reporter.ca_indices
    schema = reporter.schema(n_atoms)
    n_selected = n_atoms if reporter.positions == "all" else len(indices)
    assert schema == frame_schema(n_atoms, n_selected, len(indices), reporter.velocities)
    assert reporter.count == len(frames) and reporter.seconds > 0
    for number, (frame, positions) in enumerate(zip(frames, truth, strict=True), start=1):
        assert set(frame) == set(schema)
        for key, (dtype, shape) in schema.items():
            value = np.asarray(frame[key])
            assert value.dtype == dtype, key
            assert value.shape == shape, key
        assert int(frame["step"]) == number * interval
        assert float(frame["time_ps"]) == pytest.approx(
            number * interval * simulation.integrator.getStepSize().value_in_unit(unit.picosecond)
        )
        assert int(frame["sim_id"]) == 3 and int(frame["segment_id"]) == 5
        ca = positions[indices]
        expected_selected = positions if reporter.positions == "all" else ca
        np.testing.assert_allclose(frame["positions"], expected_selected, atol=1e-3)
        np.testing.assert_array_equal(
            frame["contact_map"], contact_map(ca, reporter.cutoff_angstrom)
        )
        rmsd = float(frame["rmsd"])
        assert rmsd >= 0
        assert rmsd == pytest.approx(kabsch_rmsd(ca, reporter.reference_ca_angstrom), abs=1e-4)
        if reporter.velocities:
            np.testing.assert_allclose(frame["all_positions"] * 10.0, positions, atol=1e-3)
            assert np.all(np.isfinite(frame["velocities"]))
            assert np.abs(frame["velocities"]).max() > 0


def test_alanine_dipeptide_reference_platform() -> None:
    config = SimulationConfig(
        pdb_file=ALANINE, forcefield=IMPLICIT_FF, platform="Reference", contact_cutoff_angstrom=8.0
    )
    simulation, reporter, frames, truth = _run_with_reporter(
        config, ALANINE, steps=300, interval=50, positions="all", velocities=True
    )
    assert simulation.context.getPlatform().getName() == "Reference"
    assert not simulation.system.usesPeriodicBoundaryConditions()
    assert len(frames) == 6
    _check_frames(simulation, reporter, frames, truth, interval=50)
    # One CA: a 1x1 contact map and zero RMSD by construction.
    assert frames[0]["contact_map"].shape == (1, 1) and float(frames[-1]["rmsd"]) == 0.0


def test_fs_peptide_cpu_ca_positions() -> None:
    config = SimulationConfig(platform="CPU", cpu_threads=1, temperature_k=310.0)
    simulation, reporter, frames, truth = _run_with_reporter(
        config, FS_PEPTIDE, steps=400, interval=100, positions="ca", velocities=False
    )
    assert simulation.context.getPlatform().getPropertyValue(simulation.context, "Threads") == "1"
    # The bogus CRYST1 1 1 1 box of the file must be gone in implicit solvent.
    assert simulation.topology.getPeriodicBoxVectors() is None
    assert not simulation.system.usesPeriodicBoundaryConditions()
    assert len(frames) == 4
    _check_frames(simulation, reporter, frames, truth, interval=100)
    assert "velocities" not in frames[0] and "all_positions" not in frames[0]
    # Starting from the reference, the RMSD after 0.8 ps is small but non-zero.
    assert 0.0 < float(frames[-1]["rmsd"]) < 3.0
    # segment_id is settable between segments.
    reporter.segment_id = 6
    simulation.step(100)
    assert int(frames[-1]["segment_id"]) == 6 and len(frames) == 5


def test_seeded_velocities_are_reproducible() -> None:
    config = SimulationConfig(forcefield=IMPLICIT_FF, platform="Reference")
    pdb = load_pdb(ALANINE)

    def velocities(seed: int) -> np.ndarray:
        simulation, _ = build_simulation(config, pdb, seed=seed)
        state = simulation.context.getState(getVelocities=True)
        return state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)

    np.testing.assert_array_equal(velocities(0), velocities(0))
    assert not np.array_equal(velocities(0), velocities(1))


def test_vacuum_with_cutoff() -> None:
    config = SimulationConfig(
        forcefield=["amber99sbildn.xml"], solvent="vacuum", nonbonded_cutoff_nm=1.2,
        constraints="none", platform="Reference",
    )
    simulation, name = build_simulation(config, load_pdb(ALANINE))
    assert name == "Reference"
    force = next(f for f in simulation.system.getForces() if isinstance(f, openmm.NonbondedForce))
    assert force.getNonbondedMethod() == openmm.NonbondedForce.CutoffNonPeriodic
    assert force.getCutoffDistance().value_in_unit(unit.nanometer) == pytest.approx(1.2)
    assert simulation.system.getNumConstraints() == 0
    simulation.step(10)


def test_explicit_solvent_is_solvated_and_unwrapped() -> None:
    config = SimulationConfig(
        forcefield=["amber99sbildn.xml", "tip3p.xml"], solvent="explicit",
        platform="CPU", cpu_threads=1,
    )
    pdb = load_pdb(FS_PEPTIDE)
    simulation, _ = build_simulation(config, pdb, seed=1)
    n_atoms = simulation.topology.getNumAtoms()
    assert n_atoms > pdb.topology.getNumAtoms()
    assert simulation.system.usesPeriodicBoundaryConditions()
    force = next(f for f in simulation.system.getForces() if isinstance(f, openmm.NonbondedForce))
    assert force.getNonbondedMethod() == openmm.NonbondedForce.PME
    assert force.getCutoffDistance().value_in_unit(unit.nanometer) == pytest.approx(1.0)
    frames: list[dict] = []
    reporter = FrameReporter(
        5, frames.append, ca_indices(simulation.topology), reference_ca_angstrom(FS_PEPTIDE)
    )
    simulation.reporters.append(reporter)
    simulation.step(10)
    assert len(frames) == 2
    # The reporter asks for unwrapped positions, equal to the context's own.
    state = simulation.context.getState(getPositions=True, enforcePeriodicBox=False)
    unwrapped = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    np.testing.assert_allclose(frames[-1]["all_positions"], unwrapped, atol=1e-5)
    assert frames[-1]["all_positions"].shape == (n_atoms, 3)


def test_explicit_without_water_model_is_clear() -> None:
    config = SimulationConfig(forcefield=["amber99sbildn.xml"], solvent="explicit")
    with pytest.raises(StructureError, match="water"):
        build_simulation(config, load_pdb(ALANINE), platform_name="Reference")


def test_reporter_rejects_mismatched_reference() -> None:
    with pytest.raises(ValueError, match="CA"):
        FrameReporter(10, lambda frame: None, np.arange(3), np.zeros((4, 3)))
