"""Export a run as trajectories (mdtraj): `ddmd-stream export RUN_DIR [--out DIR] [--format
dcd|xtc|h5|pdb] [--outliers]`.

Writes into DIR (default RUN_DIR/export/):

- `sim-0000.dcd` … one trajectory per simulation, its frames in the order they arrived in the
  stores; all-atom where the stores hold `all_positions` (nm), else the streamed `positions`
  (Å → nm) of the atoms `simulation.positions` selects; periodic box where frames have `box`.
  A simulation restarted from another structure's outlier gets one trajectory per structure
  (`sim-0000-s0001.dcd`). With `--format pdb` the trajectory is `sim-0000.frames.pdb`.
- `sim-0000.pdb` beside each: its topology (the same atoms), built from the run's starting
  structure as the simulations build it (solvated where they are), at its starting coordinates.
- `lineage.csv`: one row per restart (`ddmd_stream.lineage`).
- with `--outliers`: `outliers-v0007.pdb`, every record of a catalog version (the catalog and
  the version before it, `.prev`) as one model of a multi-model PDB, and `outliers.csv`
  saying which model is which frame.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ddmd_stream.catalog import Catalog, CatalogError, OutlierCatalog, OutlierRecord
from ddmd_stream.config import RunConfig, SimulationConfig, load_config
from ddmd_stream.errors import InputError
from ddmd_stream.frames import (
    ALL_POSITIONS,
    ANGSTROM_TO_NM,
    BOX,
    POSITIONS,
    SIM_ID,
    STRUCTURE_ID,
    TIME_PS,
)
from ddmd_stream.lineage import lineage, write_lineage_csv
from ddmd_stream.report.load import check_run_dir
from ddmd_stream.rundir import RunDir
from ddmd_stream.streams import (
    Batch,
    MissingVariables,
    ShapeMismatch,
    concat_ragged,
    read_store,
    stack_frames,
)

logger = logging.getLogger(__name__)

FORMATS = ("dcd", "xtc", "h5", "pdb")
# coordinate fields in order of preference, with the factor that takes them to nm
COORDINATES = ((ALL_POSITIONS, 1.0), (POSITIONS, ANGSTROM_TO_NM))
FRAME_IDS = (SIM_ID, STRUCTURE_ID, TIME_PS)
OUTLIER_COLUMNS = ("version", "file", "model", "sim_id", "segment_id", "step", "structure_id",
                   "rmsd", "score", "model_version")


class ExportError(InputError):
    """The run cannot be exported as asked; the message says why."""


@dataclass
class Exported:
    """What `export_run` wrote."""

    out_dir: Path
    trajectories: list[Path] = field(default_factory=list)
    frames: int = 0
    restarts: int = 0
    outliers: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------- structures


class Structures:
    """The run's starting structures as mdtraj one-frame trajectories, each built once."""

    def __init__(self, config: SimulationConfig):
        self.config = config
        self._built: dict[int, tuple[Any, Any]] = {}

    def start(self, structure_id: int) -> Any:
        """Structure `structure_id` with every atom the simulations have (mdtraj.Trajectory)."""
        return self._build(structure_id)[0]

    def atoms(self, structure_id: int, coordinates: str) -> Any:
        """Structure `structure_id` on the atoms a coordinate field holds: all of them for
        `all_positions`, the streamed ones for `positions`."""
        if coordinates == ALL_POSITIONS:
            return self.start(structure_id)
        return self.streamed(structure_id)

    def streamed(self, structure_id: int) -> Any:
        """Structure `structure_id` reduced to the atoms `simulation.positions` streams."""
        from ddmd_stream.md.geometry import select_atoms

        start, topology = self._build(structure_id)
        try:
            return start.atom_slice(select_atoms(topology, self.config.positions))
        except ValueError as error:
            raise ExportError(f"simulation.positions: {error}") from None

    def _build(self, structure_id: int) -> tuple[Any, Any]:
        if structure_id not in self._built:
            self._built[structure_id] = self._model(structure_id)
        return self._built[structure_id]

    def _model(self, structure_id: int) -> tuple[Any, Any]:
        """(mdtraj start frame, OpenMM topology) as `md.system.build_system` makes them."""
        import mdtraj
        import openmm.unit as unit

        from ddmd_stream.md.system import build_system, load_pdb

        structures = self.config.structures()
        if not 0 <= structure_id < len(structures):
            raise ExportError(f"frames name structure {structure_id}, but the run has "
                              f"{len(structures)} starting structure(s)")
        modeller, _system = build_system(self.config, load_pdb(structures[structure_id]))
        xyz = np.asarray(modeller.positions.value_in_unit(unit.nanometer), np.float32)
        start = mdtraj.Trajectory(xyz[None], mdtraj.Topology.from_openmm(modeller.topology))
        box = modeller.topology.getPeriodicBoxVectors()
        if box is not None:
            start.unitcell_vectors = np.asarray(box.value_in_unit(unit.nanometer))[None]
        return start, modeller.topology


# --------------------------------------------------------------------------- frames


def read_coordinates(store: Path) -> tuple[str, Batch]:
    """(coordinate field, frames) of a store: `all_positions` where it has them, else
    `positions`; with `box` where it has it, and the ids of every frame. Coordinates of
    several atom counts (structures of different sizes) are an object array of frames."""
    for name, _scale in COORDINATES:
        for extra in ([BOX], []):
            try:
                return name, read_store(store, [name, *FRAME_IDS, *extra], ragged=True)
            except MissingVariables:
                continue
    raise ExportError(f"{store}: its frames have neither {ALL_POSITIONS} nor {POSITIONS}")


def run_frames(stores: list[Path]) -> tuple[str, Batch]:
    """The coordinates and ids of every frame of `stores`, in store order and arrival order."""
    read = [read_coordinates(store) for store in stores]
    read = [(name, batch) for name, batch in read if batch]
    if not read:
        raise ExportError(f"no frames stored yet in {', '.join(map(str, stores)) or 'stream/'}")
    names = {name for name, _ in read}
    if len(names) > 1:
        raise ExportError(f"the stores differ in their coordinates ({sorted(names)})")
    return read[0][0], concat_ragged([batch for _, batch in read])


def frame_groups(frames: Batch) -> list[tuple[int, int, np.ndarray]]:
    """(sim_id, structure_id, frame indices in order) of every simulation and structure."""
    keys = np.stack([frames[SIM_ID], frames[STRUCTURE_ID]], axis=1)
    return [(int(sim), int(structure),
             np.flatnonzero((frames[SIM_ID] == sim) & (frames[STRUCTURE_ID] == structure)))
            for sim, structure in np.unique(keys, axis=0)]


def trajectory(frames: Batch, rows: np.ndarray, name: str, topology_frame: Any) -> Any:
    """An mdtraj.Trajectory of frames `rows` (coordinates from field `name`) on the atoms of
    `topology_frame`; ExportError when the atom counts differ."""
    import mdtraj

    scale = dict(COORDINATES)[name]
    xyz = _stacked(frames[name][rows], name).astype(np.float32) * np.float32(scale)
    if xyz.shape[1] != topology_frame.n_atoms:
        raise ExportError(f"frames have {xyz.shape[1]} atoms in {name}, the starting structure "
                          f"builds {topology_frame.n_atoms}: was config.yaml changed later?")
    traj = mdtraj.Trajectory(xyz, topology_frame.topology, time=frames[TIME_PS][rows])
    if BOX in frames:
        traj.unitcell_vectors = _stacked(frames[BOX][rows], BOX)
    return traj


def _stacked(values: np.ndarray, name: str) -> np.ndarray:
    """One simulation's and structure's frames of field `name` as one array."""
    try:
        return stack_frames(values)
    except ShapeMismatch as error:
        raise ExportError(f"{name}: frames of one simulation and structure: {error}") from None


def trajectory_stem(sim_id: int, structure_id: int, several: bool) -> str:
    """`sim-0003`, or `sim-0003-s0001` when the simulation ran on several structures."""
    stem = f"sim-{sim_id:04d}"
    return f"{stem}-s{structure_id:04d}" if several else stem


def trajectory_path(out_dir: Path, stem: str, fmt: str) -> Path:
    """Where a trajectory goes (`stem.pdb` is its topology, so PDB frames get `.frames.pdb`)."""
    return out_dir / (f"{stem}.frames.pdb" if fmt == "pdb" else f"{stem}.{fmt}")


def write_trajectories(run: RunDir, config: RunConfig, out_dir: Path, fmt: str,
                       exported: Exported) -> None:
    """One trajectory and its topology PDB per simulation (and structure) of the run."""
    name, frames = run_frames(run.aggregator_stores())
    structures = Structures(config.simulation)
    groups = frame_groups(frames)
    sims = [sim for sim, _, _ in groups]
    for sim, structure, rows in groups:
        atoms = structures.atoms(structure, name)
        stem = trajectory_stem(sim, structure, sims.count(sim) > 1)
        path = trajectory_path(out_dir, stem, fmt)
        trajectory(frames, rows, name, atoms).save(str(path))
        atoms.save_pdb(str(out_dir / f"{stem}.pdb"))
        exported.trajectories.append(path)
        exported.frames += len(rows)
        logger.info("%s: %d frames of %d atoms", path, len(rows), atoms.n_atoms)


# --------------------------------------------------------------------------- outliers


def catalog_versions(run: RunDir) -> list[Catalog]:
    """Every readable catalog version on disk with records: the one before the newest
    (`.prev`), then the newest. An unreadable one is skipped with a warning."""
    newest = OutlierCatalog(run.catalog_file)
    versions = []
    for catalog in (OutlierCatalog(newest.previous_path), newest):
        try:
            versions.append(catalog.load())
        except CatalogError as error:
            logger.warning("%s; skipped", error)
    return [c for c in versions if c.records]


def outlier_models(records: list[OutlierRecord], structures: Structures) -> dict[int, Any]:
    """Per structure: its records as one trajectory (a frame per record, in record order)."""
    import mdtraj

    models = {}
    for structure in sorted({r.structure_id for r in records}):
        mine = [r for r in records if r.structure_id == structure]
        start = structures.start(structure)
        xyz = np.stack([r.positions for r in mine]).astype(np.float32)
        if xyz.shape[1] != start.n_atoms:
            raise ExportError(f"catalog records have {xyz.shape[1]} atoms, structure "
                              f"{structure} builds {start.n_atoms}")
        models[structure] = mdtraj.Trajectory(xyz, start.topology)
        if all(r.box is not None for r in mine):
            models[structure].unitcell_vectors = np.stack([r.box for r in mine])
    return models


def write_outliers(run: RunDir, config: RunConfig, out_dir: Path, exported: Exported) -> None:
    """A multi-model PDB per catalog version (and structure), and `outliers.csv`."""
    structures = Structures(config.simulation)
    rows: list[dict[str, Any]] = []
    for catalog in catalog_versions(run):
        models = outlier_models(catalog.records, structures)
        for structure, models_of in models.items():
            suffix = f"-s{structure:04d}" if len(models) > 1 else ""
            path = out_dir / f"outliers-v{catalog.version:04d}{suffix}.pdb"
            models_of.save_pdb(str(path))
            exported.outliers.append(path)
            mine = [r for r in catalog.records if r.structure_id == structure]
            rows.extend(_outlier_row(catalog.version, path, i, r) for i, r in enumerate(mine))
    with open(out_dir / "outliers.csv", "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=OUTLIER_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _outlier_row(version: int, path: Path, model: int, record: OutlierRecord) -> dict[str, Any]:
    """One line of outliers.csv: which record is model `model` (0-based) of `path`."""
    row = {name: getattr(record, name) for name in OUTLIER_COLUMNS[3:]}
    return {"version": version, "file": path.name, "model": model, **row}


# --------------------------------------------------------------------------- the whole run


def export_run(run_dir: Path, out_dir: Path | None = None, fmt: str = "dcd",
               outliers: bool = False) -> Exported:
    """Write a run's trajectories, topologies, lineage.csv (and outlier PDBs); see the module."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown trajectory format {fmt!r} (use {', '.join(FORMATS)})")
    _require_writer(fmt)
    run = check_run_dir(Path(run_dir))
    config = load_config(run.config_file)
    out = Path(out_dir) if out_dir is not None else run.root / "export"
    out.mkdir(parents=True, exist_ok=True)
    exported = Exported(out)
    write_trajectories(run, config, out, fmt, exported)
    rows = lineage(run.root)
    with open(out / "lineage.csv", "w", newline="") as stream:
        write_lineage_csv(rows, stream)
    exported.restarts = len(rows)
    if outliers:
        write_outliers(run, config, out, exported)
    return exported


def _require_writer(fmt: str) -> None:
    """mdtraj, and for HDF5 PyTables, importable; ExportError (how to install) otherwise."""
    try:
        import mdtraj  # noqa: F401

        if fmt == "h5":
            import tables  # noqa: F401
    except ImportError as error:
        raise ExportError(f"--format {fmt} needs {error.name}: pip install "
                          f"{'tables' if error.name == 'tables' else 'mdtraj'}") from None


def main(argv: list[str] | None = None) -> int:
    """The CLI; the exit status (2 with one `error:` line on bad input)."""
    parser = argparse.ArgumentParser(prog="ddmd-stream export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="run directory (workflow.run_dir)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (RUN_DIR/export)")
    parser.add_argument("--format", choices=FORMATS, default="dcd", help="trajectory format")
    parser.add_argument("--outliers", action="store_true",
                        help="also write every catalog version as a multi-model PDB")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        exported = export_run(args.run_dir, args.out, args.format, args.outliers)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(exported.trajectories)} trajectories ({exported.frames} frames), "
          f"lineage.csv ({exported.restarts} restarts)"
          + (f", {len(exported.outliers)} outlier PDBs" if args.outliers else "")
          + f" to {exported.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
