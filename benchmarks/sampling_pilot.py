"""Pilot for the sampling study: how often plain MD of alanine dipeptide reaches the rare basin.

    python benchmarks/sampling_pilot.py [--conditions vacuum:300 vacuum:400 implicit:300]
                                        [--runs 8] [--max-ns 3] [--budget-ns 6]
                                        [--write-start]

The rare basin is C7ax/αL: φ between 30° and 100°. Every run starts from the same conformation
settled in C7eq (φ ≈ -80°, ψ ≈ 70°): `--write-start` makes it (vacuum MD at 300 K from the
packaged extended PDB until a frame lies in C7eq, then energy minimization) and writes
`ddmd_stream/data/alanine-dipeptide-c7eq.pdb`, which the study ships and starts from.

For each condition (solvent:temperature), `--runs` independent plain-MD runs (Langevin, 2 fs,
HBonds, Reference platform, one process per core) go until their first frame (every 1 ps) in
the rare basin or `--max-ns`. Prints each first-passage time, the rate (passages per ns
outside the basin, first-passage runs pooled) and, for an ensemble with `--budget-ns` total,
the share of runs expected to reach the basin (1 - exp(-rate × budget); ensemble members
are independent, so the total ns is what counts).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "ddmd_stream" / "data"
EXTENDED = DATA / "alanine-dipeptide.pdb"
C7EQ = DATA / "alanine-dipeptide-c7eq.pdb"
RARE_PHI = (30.0, 100.0)
CHECK_PS = 1.0


def simulation_config(solvent: str, temperature_k: float):
    from ddmd_stream.config import SimulationConfig

    forcefield = ["amber99sbildn.xml"] + (["amber99_obc.xml"] if solvent == "implicit" else [])
    return SimulationConfig(pdb_file=C7EQ, solvent=solvent, forcefield=forcefield,
                            temperature_k=temperature_k, platform="Reference")


def write_start(seed: int = 1) -> None:
    """C7eq start: vacuum MD at 300 K until φ ≈ -80°, ψ ≈ 70°, then minimized."""
    import openmm.app as app
    import openmm.unit as unit

    from ddmd_stream.config import SimulationConfig
    from ddmd_stream.md.geometry import dihedrals, phi_psi_atoms
    from ddmd_stream.md.system import build_simulation, load_pdb

    config = SimulationConfig(pdb_file=EXTENDED, solvent="vacuum",
                              forcefield=["amber99sbildn.xml"], platform="Reference")
    simulation, _ = build_simulation(config, load_pdb(EXTENDED), seed=seed)
    simulation.minimizeEnergy()
    quads = phi_psi_atoms(simulation.topology)
    for _ in range(20_000):
        simulation.step(50)
        positions = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
        phi, psi = dihedrals(positions.value_in_unit(unit.angstrom)[None], quads)[0]
        if -100 < phi < -60 and 40 < psi < 100:
            break
    else:
        raise SystemExit("no C7eq frame in 2 ns")
    simulation.minimizeEnergy()
    state = simulation.context.getState(getPositions=True)
    phi, psi = dihedrals(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)[None],
                         quads)[0]
    with open(C7EQ, "w") as handle:
        app.PDBFile.writeFile(simulation.topology, state.getPositions(), handle)
    print(f"wrote {C7EQ}: φ = {phi:.1f}°, ψ = {psi:.1f}° (minimized)")


def first_passage(solvent: str, temperature_k: float, seed: int, max_ns: float) -> float | None:
    """ns of plain MD until the first frame in the rare basin (None: not within max_ns)."""
    import openmm.unit as unit

    from ddmd_stream.md.geometry import dihedrals, phi_psi_atoms
    from ddmd_stream.md.system import build_simulation, load_pdb

    config = simulation_config(solvent, temperature_k)
    simulation, _ = build_simulation(config, load_pdb(C7EQ), seed=seed)
    quads = phi_psi_atoms(simulation.topology)
    steps = round(CHECK_PS * 1000 / config.timestep_fs)
    for check in range(1, round(max_ns * 1000 / CHECK_PS) + 1):
        simulation.step(steps)
        positions = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
        phi = dihedrals(positions.value_in_unit(unit.angstrom)[None], quads)[0, 0]
        if RARE_PHI[0] < phi < RARE_PHI[1]:
            return check * CHECK_PS / 1000
    return None


def pilot(condition: str, runs: int, max_ns: float, budget_ns: float, workers: int) -> None:
    solvent, temperature = condition.split(":")
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        times = list(pool.map(first_passage, [solvent] * runs, [float(temperature)] * runs,
                              range(1, runs + 1), [max_ns] * runs))
    reached = [t for t in times if t is not None]
    exposure = sum(t if t is not None else max_ns for t in times)
    rate = len(reached) / exposure
    expected = 1 - math.exp(-rate * budget_ns)
    shown = " ".join("-" if t is None else f"{t:.3f}" for t in times)
    print(f"{condition:>14}: {len(reached)}/{runs} within {max_ns} ns; first passage (ns): "
          f"{shown}; rate {rate:.3f}/ns; P(reach within {budget_ns} ns total) = {expected:.2f}"
          f"  [{time.perf_counter() - started:.0f} s]", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conditions", nargs="+",
                        default=["vacuum:300", "vacuum:400", "implicit:300", "implicit:350"])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--max-ns", type=float, default=3.0)
    parser.add_argument("--budget-ns", type=float, default=6.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--write-start", action="store_true")
    args = parser.parse_args(argv)
    print(f"sampling pilot, {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()} "
          f"({os.cpu_count()} cores), rare basin {RARE_PHI[0]:.0f}° < φ < {RARE_PHI[1]:.0f}°")
    if args.write_start or not C7EQ.exists():
        write_start()
    for condition in args.conditions:
        pilot(condition, args.runs, args.max_ns, args.budget_ns, args.workers)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
