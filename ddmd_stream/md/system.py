"""Building an OpenMM simulation from a `SimulationConfig`: structure, force field, platform."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from ddmd_stream.config import SimulationConfig
from ddmd_stream.errors import InputError
from ddmd_stream.frames import CONTACT_MAP, POSITIONS
from ddmd_stream.md.geometry import WATER_RESIDUES, ca_indices, select_atoms

logger = logging.getLogger(__name__)

# Order in which `platform: auto` tries platforms (Reference is too slow to pick silently).
AUTO_PLATFORMS = ("CUDA", "OpenCL", "CPU")

CONSTRAINTS: dict[str, Any] = {
    "none": None,
    "HBonds": app.HBonds,
    "AllBonds": app.AllBonds,
    "HAngles": app.HAngles,
}


# Modeller water model inferred from the force field file names; tip3p otherwise.
WATER_MODELS = ("tip4pew", "tip5p", "spce", "opc3", "opc", "tip3p")

DEFAULT_EXPLICIT_CUTOFF_NM = 1.0
MINIMIZE_MAX_ITERATIONS = 10_000  # bounds the time a bad start can take
SOLVENT_PADDING_NM = 1.0
MIN_BOX_CUTOFFS = 2.5  # box edge at least this many nonbonded cutoffs (NPT boxes breathe)


class StructureError(InputError):
    """A structure file is missing, unreadable or unusable; the message names the file."""


def load_pdb(path: Path) -> app.PDBFile:
    """Read a PDB file; StructureError (one line, naming the file) when that is not possible."""
    path = Path(path)
    if not path.exists():
        raise StructureError(f"{path}: PDB file not found")
    if not path.is_file():
        raise StructureError(f"{path}: not a regular file (expected a PDB file)")
    if path.stat().st_size == 0:
        raise StructureError(f"{path}: file is empty (expected a PDB file)")
    try:
        pdb = app.PDBFile(str(path))
    except IndexError:  # PDBFile's way of saying it found no MODEL/ATOM records
        raise StructureError(f"{path}: no ATOM/HETATM records (not a PDB file?)") from None
    except Exception as error:  # PDBFile raises many kinds (ValueError, KeyError, UnicodeError...)
        detail = " ".join(str(error).split()) or type(error).__name__
        raise StructureError(f"{path}: cannot parse as PDB: {detail}") from None
    if pdb.topology.getNumAtoms() == 0:
        raise StructureError(f"{path}: no ATOM/HETATM records (not a PDB file, or empty)")
    return pdb


def positions_angstrom(pdb: app.PDBFile) -> np.ndarray:
    """All positions of a PDB as a float64 (n, 3) array in Å."""
    return np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.angstrom), dtype=np.float64)


def reference_ca_angstrom(path: Path) -> np.ndarray:
    """CA positions (Å) of a reference structure, e.g. `config.reference_pdb or config.pdb_file`."""
    pdb = load_pdb(path)
    try:
        indices = ca_indices(pdb.topology)
    except ValueError as error:
        raise StructureError(f"{path}: {error}") from None
    return positions_angstrom(pdb)[indices]


# --------------------------------------------------------------------------- platforms


def _platform_properties(name: str, config: SimulationConfig) -> dict[str, str]:
    if name == "CPU" and config.cpu_threads is not None:
        return {"Threads": str(config.cpu_threads)}
    if name in ("CUDA", "OpenCL"):
        return {"Precision": config.precision}
    return {}


def _get_platform(name: str) -> openmm.Platform:
    try:
        return openmm.Platform.getPlatformByName(name)
    except Exception:
        count = openmm.Platform.getNumPlatforms()
        available = [openmm.Platform.getPlatform(i).getName() for i in range(count)]
        raise StructureError(
            f"simulation.platform: OpenMM platform {name!r} is not available here "
            f"(available: {', '.join(available)}); use auto or one of those"
        ) from None


def platform_candidates(
    config: SimulationConfig, platform_name: str | None = None
) -> list[tuple[openmm.Platform, dict[str, str]]]:
    """Platforms to try in order: the loaded ones of AUTO_PLATFORMS for auto, else the named one."""
    name = platform_name or config.platform
    if name != "auto":
        return [(_get_platform(name), _platform_properties(name, config))]
    candidates = []
    for candidate in AUTO_PLATFORMS:
        try:
            platform = openmm.Platform.getPlatformByName(candidate)
        except Exception:
            continue  # plugin not loaded (no driver / not built)
        candidates.append((platform, _platform_properties(candidate, config)))
    if not candidates:
        raise ValueError(f"none of the OpenMM platforms {', '.join(AUTO_PLATFORMS)} is available")
    return candidates


def choose_platform(
    config: SimulationConfig, platform_name: str | None = None
) -> tuple[openmm.Platform, dict[str, str]]:
    """The platform (and its properties) a simulation should use; auto takes the first loaded one.

    A loaded CUDA/OpenCL plugin may still fail to create a context (no device); `build_simulation`
    then falls back to the next candidate.
    """
    platform, properties = platform_candidates(config, platform_name)[0]
    logger.info("chose OpenMM platform %s %s", platform.getName(), properties or "")
    return platform, properties


# --------------------------------------------------------------------------- system


def _water_model(forcefield_files: list[str]) -> str:
    for name in forcefield_files:
        lowered = Path(name).name.lower()
        for model in WATER_MODELS:
            if model in lowered:
                return model
    return "tip3p"


def _has_water(topology: app.Topology) -> bool:
    return any(residue.name.upper() in WATER_RESIDUES for residue in topology.residues())


def _prepare(
    config: SimulationConfig, pdb: app.PDBFile, forcefield: app.ForceField
) -> tuple[app.Modeller, dict[str, Any]]:
    """The model to simulate and the createSystem keyword arguments for the solvent model."""
    modeller = app.Modeller(pdb.topology, pdb.positions)
    cutoff_nm = config.nonbonded_cutoff_nm
    if config.solvent in ("implicit", "vacuum"):
        # Non-periodic: a (possibly bogus, e.g. CRYST1 1 1 1) box in the PDB must not matter.
        modeller.topology.setPeriodicBoxVectors(None)
        if cutoff_nm is None:
            return modeller, {"nonbondedMethod": app.NoCutoff}
        return modeller, {
            "nonbondedMethod": app.CutoffNonPeriodic,
            "nonbondedCutoff": cutoff_nm * unit.nanometer,
        }
    # Explicit solvent: PME in a periodic box; solvate when the PDB has no water.
    cutoff = cutoff_nm or DEFAULT_EXPLICIT_CUTOFF_NM
    if not _has_water(modeller.topology):
        _solvate(config, modeller, forcefield, cutoff)
    elif modeller.topology.getPeriodicBoxVectors() is None:
        raise StructureError("the structure contains water but no periodic box (CRYST1 record)")
    return modeller, {"nonbondedMethod": app.PME, "nonbondedCutoff": cutoff * unit.nanometer}


def _solvate(config: SimulationConfig, modeller: app.Modeller, forcefield: app.ForceField,
             cutoff_nm: float) -> None:
    """Water around the solute, SOLVENT_PADDING_NM on every side; a box at least
    MIN_BOX_CUTOFFS cutoffs wide, so that a barostat never shrinks it below two cutoffs."""
    model = _water_model(config.forcefield)
    logger.info("solvating with %s, padding %.1f nm", model, SOLVENT_PADDING_NM)
    solute = app.Modeller(modeller.topology, modeller.positions)
    try:
        modeller.addSolvent(forcefield, model=model, padding=SOLVENT_PADDING_NM * unit.nanometer)
        smallest = MIN_BOX_CUTOFFS * cutoff_nm
        box = modeller.topology.getPeriodicBoxVectors()
        if min(box[i][i].value_in_unit(unit.nanometer) for i in range(3)) < smallest:
            modeller.topology, modeller.positions = solute.topology, solute.positions
            modeller.addSolvent(forcefield, model=model,
                                boxSize=openmm.Vec3(smallest, smallest, smallest) * unit.nanometer)
    except Exception as error:
        raise StructureError(
            f"cannot add {model} water (does simulation.forcefield include a water model XML, "
            f"e.g. tip3p.xml?): {error}"
        ) from None


def load_forcefield(config: SimulationConfig) -> app.ForceField:
    try:
        return app.ForceField(*config.forcefield)
    except Exception as error:
        raise StructureError(
            f"simulation.forcefield: cannot load {config.forcefield}: {error}"
        ) from None


def build_system(config: SimulationConfig, pdb: app.PDBFile) -> tuple[app.Modeller, openmm.System]:
    """The (possibly solvated) model and its OpenMM System; StructureError if it cannot be built."""
    forcefield = load_forcefield(config)
    modeller, kwargs = _prepare(config, pdb, forcefield)
    try:
        system = forcefield.createSystem(
            modeller.topology, constraints=CONSTRAINTS[config.constraints], **kwargs
        )
    except ValueError as error:
        raise StructureError(
            f"{config.pdb_file}: simulation.forcefield cannot parametrize the structure "
            f"(missing hydrogens or unknown residues? try pdbfixer): {_first_line(error)}"
        ) from None
    if system.usesPeriodicBoundaryConditions() and config.pressure_bar is not None:
        # NPT, as DeepDriveMD's explicit-solvent runs: the box breathes, so it travels with
        # every frame and catalog record and a restart restores it.
        system.addForce(openmm.MonteCarloBarostat(config.pressure_bar * unit.bar,
                                                  config.temperature_k * unit.kelvin))
    return modeller, system


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def check_simulation_inputs(config: SimulationConfig, check_platform: bool = True,
                            input_field: str | None = None) -> list[str]:
    """Problems with the structures, force field and platform a run would use (empty: none).

    The platform is checked only where the simulations will run (`check_platform`); the
    starting structures must agree in the shape of the model's `input_field` (None: of
    contact_map and of positions unless those are all atoms).
    """
    try:
        shape_problem = _input_shape_problem(config, input_field)
        if shape_problem:
            return [shape_problem]
        pdb = load_pdb(config.pdb_file)
        reference_file = config.reference_pdb or config.pdb_file
        reference = reference_ca_angstrom(reference_file)
        n_ca = len(ca_indices(pdb.topology))
        if len(reference) != n_ca:
            return [
                f"simulation.reference_pdb: {reference_file} has {len(reference)} CA atoms but "
                f"{config.pdb_file} has {n_ca}; use a reference of the same protein"
            ]
        build_system(config, pdb)
        if check_platform and config.platform != "auto":
            _get_platform(config.platform)
    except StructureError as error:
        return [str(error)]
    except ValueError as error:
        return [f"{config.pdb_file}: {error}"]
    return []


# The atom selection behind each model input field.
INPUT_SELECTIONS = {CONTACT_MAP: "contact_atoms", POSITIONS: "positions"}


def _input_shape_problem(config: SimulationConfig, input_field: str | None) -> str | None:
    """One line when the starting structures differ in the atoms a model input holds
    (different proteins): their frames could not be learnt from together."""
    structures = config.structures()
    if len(structures) < 2:
        return None
    fields = [input_field] if input_field else list(INPUT_SELECTIONS)
    for name in fields:
        option = INPUT_SELECTIONS.get(name)
        selection = getattr(config, option, None) if option else None
        if selection is None or (selection == "all" and input_field is None):
            continue
        counts = {path: _selected_atoms(config, path, selection) for path in structures}
        if len(set(counts.values())) > 1:
            found = ", ".join(f"{path.name}: {count}" for path, count in counts.items())
            return (f"simulation.initial_structures: the starting structures differ in the "
                    f"atoms of simulation.{option} ({selection}), so {name} differs in shape "
                    f"({found} atoms); use structures of one protein")
    return None


def _selected_atoms(config: SimulationConfig, path: Path, selection: str | list[int]) -> int:
    """How many atoms `selection` picks in structure `path` (all: after solvation)."""
    pdb = load_pdb(path)
    if selection == "all":
        modeller, _kwargs = _prepare(config, pdb, load_forcefield(config))
        return modeller.topology.getNumAtoms()
    try:
        return len(select_atoms(pdb.topology, selection))
    except ValueError as error:
        raise StructureError(f"{path}: {error}") from None


def _openmm_seed(seed: int) -> int:
    """OpenMM treats seed 0 as 'choose at random'; map every seed to a fixed non-zero int32."""
    return seed % (2**31 - 1) + 1


def build_simulation(
    config: SimulationConfig,
    pdb: app.PDBFile,
    platform_name: str | None = None,
    seed: int | None = None,
) -> tuple[app.Simulation, str]:
    """A ready-to-run simulation (positions set, velocities drawn at temperature) and its platform.

    `platform_name` overrides `config.platform`; `seed` makes the velocities and the Langevin
    noise reproducible.
    """
    modeller, system = build_system(config, pdb)

    last_error: Exception | None = None
    for platform, properties in platform_candidates(config, platform_name):
        integrator = openmm.LangevinMiddleIntegrator(
            config.temperature_k * unit.kelvin,
            config.friction_per_ps / unit.picosecond,
            config.timestep_fs * unit.femtosecond,
        )
        if seed is not None:
            integrator.setRandomNumberSeed(_openmm_seed(seed))
        try:
            simulation = app.Simulation(modeller.topology, system, integrator, platform, properties)
        except Exception as error:  # e.g. CUDA plugin loaded but no usable device
            logger.warning("OpenMM platform %s unusable: %s", platform.getName(), error)
            last_error = error
            continue
        break
    else:
        raise RuntimeError(f"no usable OpenMM platform: {last_error}")

    name = simulation.context.getPlatform().getName()
    logger.info(
        "simulation: %d atoms, solvent %s, platform %s %s",
        system.getNumParticles(),
        config.solvent,
        name,
        properties or "",
    )
    simulation.context.setPositions(modeller.positions)
    _draw_velocities(simulation.context, config.temperature_k, seed)
    return simulation, name


def _draw_velocities(context: openmm.Context, temperature_k: float, seed: int | None) -> None:
    """Maxwell-Boltzmann velocities at `temperature_k`, reproducible for a given `seed`."""
    temperature = temperature_k * unit.kelvin
    if seed is None:
        context.setVelocitiesToTemperature(temperature)
    else:
        context.setVelocitiesToTemperature(temperature, _openmm_seed(seed))


def prepare_start(simulation: app.Simulation, config: SimulationConfig, structure: Path,
                  seed: int | None = None) -> float:
    """Minimize (`config.minimize`) and equilibrate (`config.equilibration_ps`, not counted as
    production steps) a fresh simulation; returns the potential energy (kJ/mol) it starts with.

    StructureError naming `structure` when the energy is not finite (overlapping atoms)."""
    context = simulation.context
    clash = StructureError(
        f"{structure}: the potential energy is not finite after minimization (overlapping "
        "atoms or a broken structure?); fix the PDB, e.g. with pdbfixer"
    )
    if not np.isfinite(_potential_energy(simulation)):
        raise clash  # atoms on top of each other: the minimizer would never finish
    try:
        if config.minimize:
            simulation.minimizeEnergy(maxIterations=MINIMIZE_MAX_ITERATIONS)
        energy = _potential_energy(simulation)
    except openmm.OpenMMException:  # "Particle coordinate is NaN"
        raise clash from None
    if not np.isfinite(energy):
        raise clash
    steps = round(config.equilibration_ps * 1000.0 / config.timestep_fs)
    if steps:
        _draw_velocities(context, config.temperature_k, seed)
        step, clock = simulation.currentStep, context.getTime()
        simulation.integrator.step(steps)  # not simulation.step: no reporters
        simulation.currentStep = step  # equilibration is not production: clock unchanged
        context.setTime(clock)
        energy = _potential_energy(simulation)
    logger.info("start prepared: minimized %s, equilibrated %d steps, energy %.1f kJ/mol",
                config.minimize, steps, energy)
    return energy


def _potential_energy(simulation: app.Simulation) -> float:
    state = simulation.context.getState(getEnergy=True)
    return float(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
