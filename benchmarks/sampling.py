"""Steered (streaming, S) vs plain MD: conformational states covered at equal simulated time.

    python benchmarks/sampling.py [--systems alanine fs-peptide] [--minutes 5] [--sims 2]
                                  [--engine local|entk] [--out runs/sampling]

For each system, two runs from the same start (same PDB, same seeds, same MD settings), one
after the other, each for `--minutes` of wall time:
- steered: `workflow.mode: streaming` (simulations, aggregator, trainer, agent; simulations
  restart from the agent's outliers after every segment);
- plain:   `workflow.mode: plain` (the same simulations and aggregator; no trainer, no agent,
  no restarts).
The local engine is the default here (what is compared is simulated time, not engine start-up;
`--engine entk` runs both on RADICAL-EnTK).

States:
- alanine: the packaged alanine dipeptide (`ddmd_stream/data/alanine-dipeptide.pdb`), all-atom
  positions streamed (`simulation.positions: all`; it has a single Cα), the 3dAAE on the 22-atom
  clouds (`training.model: aae`, LOF outliers); a state is a cell of a 36 x 36 grid over the
  backbone dihedrals (phi, psi), 10 degrees each (1,296 states).
- fs-peptide: the packaged FS-peptide (21 residues), Cα positions and contact maps, the CVAE
  (DBSCAN outliers); Cα coordinates of every frame of both runs, pooled and aligned (Kabsch) to
  the starting structure, are cut into 100 states by MiniBatchKMeans (seed 0).
Outliers are ranked by their outlier score (`agent.ranking: score`), restarts pick a random
catalog entry; see `system_config` for every setting.

Coverage at simulated time t: the share of states visited by the frames every simulation wrote
up to its own simulated time t (the step counter of a simulation keeps counting through
restarts); the x axis is the total over all simulations (sims x t). Both runs are compared up
to the shorter total. Prints coverage vs simulated time for both, the ratio at the end, and
writes `OUT/sampling.png` and `OUT/sampling.json`. Short runs: the steered run spends its first
minute or two before the first model exists, so this is a short-run figure, not the paper's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "ddmd_stream" / "data"
MODES = {"steered": "streaming", "plain": "plain"}
GRID = 36  # phi/psi cells per axis
CLUSTERS = 100
CURVE_POINTS = 40


def system_config(system: str, mode: str, run_dir: Path, minutes: float, sims: int,
                  engine: str) -> dict[str, Any]:
    """The run configuration (a plain mapping) for one system and mode."""
    common = {
        "workflow": {"run_dir": str(run_dir), "mode": mode, "engine": engine,
                     "duration_s": minutes * 60.0, "on_existing": "overwrite"},
        "simulation": {"num_simulations": sims, "platform": "CPU", "cpu_threads": 1, "seed": 11,
                       "restart_policy": "random", "velocity_copy_probability": 0.0},
        "streams": {"adios_xml": str(REPO / "adios_xml" / "sst.xml")},
        "resources": {"walltime_min": int(minutes) + 15},
    }
    if system == "alanine":
        specific = {
            "simulation": {"pdb_file": str(DATA / "alanine-dipeptide.pdb"), "positions": "all",
                           "report_interval_ps": 1.0, "segment_length_ns": 0.05},
            "training": {"model": "aae", "min_samples": 200, "epochs": 5, "batch_size": 64,
                         "max_samples": 20000},
            "agent": {"min_samples": 200, "max_samples": 20000, "ranking": "score",
                      "n_outliers": 50, "outlier_band": [20, 200], "cycle_interval_s": 10},
        }
    else:
        specific = {
            "simulation": {"pdb_file": str(DATA / "fs-peptide.pdb"), "report_interval_ps": 0.5,
                           "segment_length_ns": 0.02},
            "training": {"model": "cvae", "min_samples": 60, "epochs": 3, "batch_size": 32,
                         "cvae": {"conv_filters": [16, 16, 16, 16], "dense_units": 64}},
            "agent": {"min_samples": 60, "ranking": "score", "n_outliers": 20,
                      "outlier_band": [5, 50], "cycle_interval_s": 10},
        }
    if mode == "plain":
        specific = {k: v for k, v in specific.items() if k not in ("training", "agent")}
    return {**common, **specific,
            "simulation": {**common["simulation"], **specific["simulation"]}}


def run_once(system: str, label: str, args: argparse.Namespace) -> Path:
    run_dir = (args.out / system / label).resolve()
    config = system_config(system, MODES[label], run_dir, args.minutes, args.sims, args.engine)
    config_file = run_dir.parent / f"{label}.yaml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"{system} {label}: running {args.minutes:g} min in {run_dir} ...", flush=True)
    started = time.monotonic()
    with open(run_dir.parent / f"{label}.log", "w") as log:
        code = subprocess.call([sys.executable, "-m", "ddmd_stream.launch", str(config_file)],
                               stdout=log, stderr=subprocess.STDOUT)
    print(f"{system} {label}: done in {time.monotonic() - started:.0f} s (exit {code})",
          flush=True)
    return run_dir


# --------------------------------------------------------------------------- frames → states


def load_frames(run_dir: Path) -> dict[str, np.ndarray]:
    """positions, sim_id and simulated time (ps) of every stored frame of a run."""
    from ddmd_stream.config import load_config
    from ddmd_stream.rundir import RunDir
    from ddmd_stream.streams import concat_batches, read_store

    config = load_config(RunDir(run_dir).config_file)
    parts = [read_store(p, ["positions", "sim_id", "step"])
             for p in RunDir(run_dir).aggregator_stores()]
    frames = concat_batches([p for p in parts if p])
    frames["time_ps"] = frames["step"] * config.simulation.timestep_fs * 1e-3
    return frames


def dihedrals(positions: np.ndarray, quads: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Dihedral angles (degrees, -180..180) of atom quadruples, for each frame."""
    angles = []
    for a, b, c, d in quads:
        b0 = positions[:, a] - positions[:, b]
        b1 = positions[:, c] - positions[:, b]
        b2 = positions[:, d] - positions[:, c]
        b1 /= np.linalg.norm(b1, axis=1, keepdims=True)
        v = b0 - np.sum(b0 * b1, axis=1, keepdims=True) * b1
        w = b2 - np.sum(b2 * b1, axis=1, keepdims=True) * b1
        x = np.sum(v * w, axis=1)
        y = np.sum(np.cross(b1, v) * w, axis=1)
        angles.append(np.degrees(np.arctan2(y, x)))
    return np.stack(angles, axis=1)


def backbone_quads(pdb_file: Path) -> list[tuple[int, int, int, int]]:
    """Atom indices of phi (C-N-CA-C) and psi (N-CA-C-N) of the middle residue."""
    from openmm import app

    residues = list(app.PDBFile(str(pdb_file)).topology.residues())
    atom = {(r.index, a.name): a.index for r in residues for a in r.atoms()}
    middle = next(r.index for r in residues if (r.index, "CA") in atom)
    phi = (atom[middle - 1, "C"], atom[middle, "N"], atom[middle, "CA"], atom[middle, "C"])
    psi = (atom[middle, "N"], atom[middle, "CA"], atom[middle, "C"], atom[middle + 1, "N"])
    return [phi, psi]


def grid_states(frames: dict[str, np.ndarray], quads: list[tuple[int, int, int, int]]
                ) -> np.ndarray:
    angles = dihedrals(frames["positions"].astype(np.float64), quads)
    cells = np.clip(((angles + 180.0) / (360.0 / GRID)).astype(int), 0, GRID - 1)
    return cells[:, 0] * GRID + cells[:, 1]


def align(coords: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Every frame (n, atoms, 3) optimally superposed (Kabsch) onto `reference` (atoms, 3)."""
    x = coords - coords.mean(axis=1, keepdims=True)
    ref = reference - reference.mean(axis=0)
    h = np.einsum("nai,aj->nij", x, ref)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.einsum("nij,njk->nik", u, vt)))
    u[:, :, -1] *= d[:, None]
    rotation = np.einsum("nij,njk->nik", u, vt)
    return np.einsum("nai,nij->naj", x, rotation)


def cluster_states(runs: dict[str, dict[str, np.ndarray]], reference: np.ndarray
                   ) -> dict[str, np.ndarray]:
    from sklearn.cluster import MiniBatchKMeans

    features = {label: align(f["positions"].astype(np.float64), reference).reshape(
        len(f["positions"]), -1) for label, f in runs.items()}
    model = MiniBatchKMeans(CLUSTERS, random_state=0, n_init=3, batch_size=2048)
    model.fit(np.concatenate(list(features.values())))
    return {label: model.predict(x) for label, x in features.items()}


def coverage_curve(frames: dict[str, np.ndarray], states: np.ndarray, t_grid: np.ndarray,
                   n_states: int) -> np.ndarray:
    """Share of states visited by frames with per-simulation time <= t, for each t."""
    return np.array([len(np.unique(states[frames["time_ps"] <= t])) / n_states for t in t_grid])


# --------------------------------------------------------------------------- analysis


def analyse(system: str, runs: dict[str, Path]) -> dict[str, Any]:
    from ddmd_stream.md.system import load_pdb, positions_angstrom

    frames = {label: load_frames(run) for label, run in runs.items()}
    pdb = DATA / ("alanine-dipeptide.pdb" if system == "alanine" else "fs-peptide.pdb")
    if system == "alanine":
        quads = backbone_quads(pdb)
        states = {label: grid_states(f, quads) for label, f in frames.items()}
        n_states, kind = GRID * GRID, f"phi/psi cells ({GRID}x{GRID})"
    else:
        from ddmd_stream.md.geometry import ca_indices

        structure = load_pdb(pdb)
        reference = positions_angstrom(structure)[ca_indices(structure.topology)]
        states = cluster_states(frames, reference)
        n_states, kind = CLUSTERS, f"MiniBatchKMeans states ({CLUSTERS}) of aligned Cα"
    sims = {label: np.unique(f["sim_id"]) for label, f in frames.items()}
    # equal compute: every simulation of both runs has reached t_end
    t_end = min(float(f["time_ps"][f["sim_id"] == s].max()) for label, f in frames.items()
                for s in sims[label])
    t_grid = np.linspace(t_end / CURVE_POINTS, t_end, CURVE_POINTS)
    n_sims = max(len(s) for s in sims.values())
    curves = {label: coverage_curve(frames[label], states[label], t_grid, n_states)
              for label in frames}
    restarts = {label: _restarts(run) for label, run in runs.items()}
    return {"system": system, "states": kind, "n_states": n_states, "sims": n_sims,
            "total_ns": (n_sims * t_grid / 1000.0).tolist(),
            "coverage": {label: c.tolist() for label, c in curves.items()},
            "frames": {label: int(np.sum(f["time_ps"] <= t_end)) for label, f in frames.items()},
            "restarts": restarts,
            "ratio_at_end": curves["steered"][-1] / max(curves["plain"][-1], 1e-12)}


def _restarts(run: Path) -> int:
    from ddmd_stream.profile.events import read_run_events

    return sum(e["event"] == "restart" for e in read_run_events(run))


def print_result(result: dict[str, Any]) -> None:
    print(f"\n{result['system']}: {result['states']}, {result['sims']} simulations; frames "
          f"used {result['frames']}; restarts {result['restarts']}")
    print(f"{'total ns':>9s} {'steered %':>10s} {'plain %':>8s}")
    step = max(1, CURVE_POINTS // 8)
    for i in [*range(step - 1, CURVE_POINTS - 1, step), CURVE_POINTS - 1]:
        print(f"{result['total_ns'][i]:9.3f} {100 * result['coverage']['steered'][i]:10.1f} "
              f"{100 * result['coverage']['plain'][i]:8.1f}")
    print(f"steered/plain states covered at {result['total_ns'][-1]:.3f} ns: "
          f"{result['ratio_at_end']:.2f} (target >= 2)")


def plot(results: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5 * len(results), 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(results), squeeze=False)[0]
    for ax, result in zip(axes, results, strict=True):
        for label, style in (("steered", "-"), ("plain", "--")):
            ax.plot(result["total_ns"], 100 * np.array(result["coverage"][label]), style,
                    label=f"{label} MD")
        ax.set_xlabel(f"total simulated time, {result['sims']} simulations (ns)")
        ax.set_ylabel(f"states covered (% of {result['n_states']})")
        ax.set_title(f"{result['system']}: {result['states']}", fontsize="medium")
        ax.grid(alpha=0.3)
        ax.legend()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", nargs="+", default=["alanine"],
                        choices=["alanine", "fs-peptide"])
    parser.add_argument("--minutes", type=float, default=5.0, help="wall time of each run")
    parser.add_argument("--sims", type=int, default=2)
    parser.add_argument("--engine", choices=["local", "entk"], default="local")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "sampling")
    parser.add_argument("--analyse-only", action="store_true",
                        help="reuse the runs already in --out")
    args = parser.parse_args(argv)
    os.environ.setdefault("ADIOS2_IP", "127.0.0.1")
    results = []
    for system in args.systems:
        if args.analyse_only:
            runs = {label: (args.out / system / label).resolve() for label in MODES}
        else:
            runs = {label: run_once(system, label, args) for label in MODES}
        results.append(analyse(system, runs))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sampling.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out / "sampling.png")
    print(f"\nsteered vs plain MD, {args.minutes:g} min wall time per run, {platform.node()} "
          f"({os.cpu_count()} cores), load {os.getloadavg()[0]:.1f}")
    for result in results:
        print_result(result)
    print(f"\nfigure: {args.out / 'sampling.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
