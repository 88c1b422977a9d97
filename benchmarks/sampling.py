"""Does steering find the rare basin faster than plain MD? Three arms at equal resources.

    python benchmarks/sampling.py [--seeds 5] [--budget-ns 10] [--sims 4] [--quick]
                                  [--solvent implicit] [--temperature 300] [--out runs/sampling]

System: alanine dipeptide (22 atoms), every run from the same conformation settled in C7eq
(`ddmd_stream/data/alanine-dipeptide-c7eq.pdb`, φ ≈ -77°, ψ ≈ 55°; made and checked by
`sampling_pilot.py`). The rare basin is C7ax/αL, 30° < φ < 100°. Solvent and temperature
come from the pilot (plain MD must reach the basin in roughly 30–70 % of runs within the
budget, or no difference can show).

Arms (each a real workflow run of `python -m ddmd_stream.launch`, local engine, the same
simulations, report interval and segment schedule):
- plain:   `workflow.mode: plain` — simulations and aggregator only, never restarted.
- random:  the streaming workflow with trainer and agent, but `agent.detector: uniform`: after
           every segment a simulation restarts from a uniformly random past frame (separates
           "restarting" from "steering"; the same tasks use the same CPU as steered).
- steered: the streaming workflow: CVAE on heavy-atom contact maps, DBSCAN outliers in its
           latent space ranked by outlier score (novelty; there is no target structure).
Each run stops when its simulations have simulated `--budget-ns` together
(`workflow.stop_total_ns`). Seeds run alternately (seed 1: plain, random, steered; seed 2:
random, steered, plain; ...), so drifts of a noisy machine fall on every arm alike.

Global clock: a run's frames in the order they were made (their `wall_time`); the k-th frame
stands at total simulated time k × report interval, over the whole ensemble. No simulation
restarts from a frame that is in its future: restarts come from frames already streamed.

Metrics per run: total ns (and wall seconds from the first frame) to the first frame in the
rare basin; coverage of φ/ψ cells (20° × 20°) vs total ns, as a share of the cells visited by
any run of any arm, and its area under the curve up to the budget (AUC, 0..1). Prints every
seed's numbers, the medians, the share of runs of each arm that reached the basin, the ratios
`first passage: steered vs plain N.N×, steered vs random restarts N.N×` (ratios of median
total ns; a run that never reached the basin counts as the budget, so the ratio is a lower
bound where plain or random did not reach it), and the AUC ratios; writes OUT/sampling.png and
OUT/sampling.json.
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
ARMS = ("plain", "random", "steered")
RARE_PHI = (30.0, 100.0)
CELL_DEG = 20.0
CURVE_POINTS = 100


def arm_config(arm: str, run_dir: Path, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The run configuration of one arm (a plain mapping for the YAML file)."""
    from ddmd_stream.config import PACKAGE_DATA

    forcefield = ["amber99sbildn.xml"] + (["amber99_obc.xml"] if args.solvent == "implicit"
                                          else [])
    config: dict[str, Any] = {
        "workflow": {"run_dir": str(run_dir), "engine": "local", "on_existing": "overwrite",
                     "duration_s": args.max_minutes * 60, "stop_total_ns": args.budget_ns,
                     "heartbeat_s": 1, "mode": "plain" if arm == "plain" else "streaming"},
        "simulation": {
            "num_simulations": args.sims, "pdb_file": str(PACKAGE_DATA /
                                                          "alanine-dipeptide-c7eq.pdb"),
            "solvent": args.solvent, "forcefield": forcefield,
            "temperature_k": args.temperature, "platform": "Reference", "seed": 1000 * seed,
            "minimize": False,  # the packaged start is minimized; all arms start from it as is
            "report_interval_ps": args.report_ps, "segment_length_ns": args.segment_ns,
            "contact_atoms": "heavy", "contact_cutoff_angstrom": 4.5, "positions": "heavy",
            "restart_policy": "random", "velocity_copy_probability": 0.5,
        },
        "streams": {"adios_xml": str(REPO / "adios_xml" / "sst.xml")},
        # 2 cores, 4 simulations + trainer + agent: the simulations yield CPU to the tasks that
        # steer them (resources.sim.nice), in every arm alike
        "resources": {"walltime_min": args.max_minutes + 10, "sim": {"nice": 10}},
    }
    if arm != "plain":
        config["training"] = {
            "model": "cvae", "min_samples": 100, "epochs": 3, "batch_size": 64,
            "max_samples": 20000, "round_interval_s": 5, "seed": seed,
            "cvae": {"conv_filters": [16, 16, 16], "conv_kernels": [3, 3, 3],
                     "conv_strides": [1, 2, 1], "dense_units": 32, "latent_dim": 4},
        }
        config["agent"] = {
            "min_samples": 100, "max_samples": 20000, "n_outliers": args.n_outliers,
            "cycle_interval_s": 2, "seed": seed, "outlier_band": [10, 200],
            "dbscan_min_samples": 5,
            "detector": "uniform" if arm == "random" else "auto",
            "ranking": "random" if arm == "random" else "score",
        }
    return config


def run_arm(arm: str, seed: int, args: argparse.Namespace) -> Path:
    run_dir = (args.out / f"seed{seed}" / arm).resolve()
    config_file = run_dir.parent / f"{arm}.yaml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(yaml.safe_dump(arm_config(arm, run_dir, seed, args), sort_keys=False))
    started = time.monotonic()
    with open(run_dir.parent / f"{arm}.log", "w") as log:
        code = subprocess.call([sys.executable, "-m", "ddmd_stream.launch", str(config_file)],
                               stdout=log, stderr=subprocess.STDOUT)
    print(f"seed {seed} {arm:>7}: {time.monotonic() - started:5.0f} s (exit {code})",
          flush=True)
    return run_dir


# --------------------------------------------------------------------------- analysis


def load_run(run_dir: Path, report_ps: float) -> dict[str, np.ndarray]:
    """φ/ψ (degrees), total ns and wall seconds of every stored frame, in the order made."""
    from ddmd_stream import frames as f
    from ddmd_stream.config import PACKAGE_DATA
    from ddmd_stream.md.geometry import dihedrals, phi_psi_atoms
    from ddmd_stream.md.system import load_pdb
    from ddmd_stream.rundir import RunDir
    from ddmd_stream.streams import concat_batches, read_store

    parts = [read_store(p, [f.ALL_POSITIONS, f.WALL_TIME, f.SIM_ID, f.SEGMENT_ID])
             for p in RunDir(run_dir).aggregator_stores()]
    batch = concat_batches([p for p in parts if p])
    order = np.argsort(batch[f.WALL_TIME], kind="stable")
    topology = load_pdb(PACKAGE_DATA / "alanine-dipeptide-c7eq.pdb").topology
    angles = dihedrals(batch[f.ALL_POSITIONS][order], phi_psi_atoms(topology))
    wall = batch[f.WALL_TIME][order]
    total_ns = np.arange(1, len(order) + 1) * report_ps / 1000.0
    restarts = _restart_times(run_dir)
    first = total_ns[min(np.searchsorted(wall, restarts[0]), len(wall) - 1)] if restarts else None
    return {"phi": angles[:, 0], "psi": angles[:, 1], "wall_s": wall - wall[0],
            "total_ns": total_ns, "restarts": np.array(len(restarts)),
            "first_restart_ns": np.array(np.nan if first is None else first)}


def within(frames: dict[str, np.ndarray], budget_ns: float) -> dict[str, np.ndarray]:
    """The frames made before the ensemble's total reached the budget (a run overshoots it
    by the time the stop takes)."""
    keep = frames["total_ns"] <= budget_ns + 1e-9
    return {name: values[keep] if values.ndim else values for name, values in frames.items()}


def _restart_times(run_dir: Path) -> list[float]:
    from ddmd_stream.events import read_run_events

    return sorted(e["t"] for e in read_run_events(run_dir) if e["event"] == "restart")


def cells(frames: dict[str, np.ndarray]) -> np.ndarray:
    per_axis = int(360 / CELL_DEG)
    phi = np.clip(((frames["phi"] + 180) // CELL_DEG).astype(int), 0, per_axis - 1)
    psi = np.clip(((frames["psi"] + 180) // CELL_DEG).astype(int), 0, per_axis - 1)
    return phi * per_axis + psi


def first_passage(frames: dict[str, np.ndarray]) -> tuple[float | None, float | None]:
    """(total ns, wall s) at the first frame in the rare basin; (None, None) if none."""
    rare = np.flatnonzero((frames["phi"] > RARE_PHI[0]) & (frames["phi"] < RARE_PHI[1]))
    if len(rare) == 0:
        return None, None
    return float(frames["total_ns"][rare[0]]), float(frames["wall_s"][rare[0]])


def coverage(frames: dict[str, np.ndarray], accessible: set[int], grid: np.ndarray
             ) -> np.ndarray:
    """Share of the accessible cells visited up to each total ns of `grid`."""
    visited = cells(frames)
    first_visit: dict[int, float] = {}
    for cell, ns in zip(visited.tolist(), frames["total_ns"].tolist(), strict=True):
        first_visit.setdefault(cell, ns)
    times = np.sort(np.array([first_visit[c] for c in first_visit if c in accessible]))
    return np.searchsorted(times, grid, side="right") / max(1, len(accessible))


def analyse(runs: dict[tuple[int, str], Path], args: argparse.Namespace) -> dict[str, Any]:
    frames = {key: within(load_run(path, args.report_ps), args.budget_ns)
              for key, path in runs.items()}
    accessible = set().union(*(set(cells(f).tolist()) for f in frames.values()))
    grid = np.linspace(args.budget_ns / CURVE_POINTS, args.budget_ns, CURVE_POINTS)
    per_run = []
    for (seed, arm), data in sorted(frames.items()):
        ns, wall = first_passage(data)
        curve = coverage(data, accessible, grid)
        per_run.append({"seed": seed, "arm": arm, "first_ns": ns, "first_wall_s": wall,
                        "total_ns": float(data["total_ns"][-1]) if len(data["phi"]) else 0.0,
                        "wall_s": float(data["wall_s"][-1]) if len(data["phi"]) else 0.0,
                        "restarts": int(data["restarts"]), "auc": float(curve.mean()),
                        "first_restart_ns": float(data["first_restart_ns"]),
                        "coverage": curve.tolist()})
    return {"budget_ns": args.budget_ns, "grid_ns": grid.tolist(), "accessible": len(accessible),
            "runs": per_run, "summary": summarize(per_run, args.budget_ns)}


def summarize(per_run: list[dict[str, Any]], budget_ns: float) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for arm in ARMS:
        runs = [r for r in per_run if r["arm"] == arm]
        first = [r["first_ns"] if r["first_ns"] is not None else budget_ns for r in runs]
        summary[arm] = {"median_first_ns": float(np.median(first)) if first else None,
                        "reached": sum(r["first_ns"] is not None for r in runs),
                        "runs": len(runs),
                        "mean_auc": float(np.mean([r["auc"] for r in runs])) if runs else None}
    steered = summary["steered"]["median_first_ns"] or float("nan")
    for other in ("plain", "random"):
        summary[f"first_passage_vs_{other}"] = (summary[other]["median_first_ns"] or 0) / steered
        summary[f"auc_vs_{other}"] = summary["steered"]["mean_auc"] / max(
            summary[other]["mean_auc"] or 0, 1e-12)
    return summary


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\nalanine dipeptide, {args.solvent} {args.temperature:g} K, {args.sims} simulations, "
          f"budget {args.budget_ns:g} ns per run, report {args.report_ps:g} ps, segment "
          f"{args.segment_ns * 1000:g} ps; {platform.node()} ({os.cpu_count()} cores); "
          f"{result['accessible']} φ/ψ cells visited by any run")
    print(f"{'seed':>4} {'arm':>8} {'first ns':>9} {'first s':>8} {'total ns':>9} "
          f"{'wall s':>7} {'restarts':>8} {'1st restart ns':>14} {'AUC':>6}")
    for r in result["runs"]:
        first = "-" if r["first_ns"] is None else f"{r['first_ns']:.3f}"
        wall = "-" if r["first_wall_s"] is None else f"{r['first_wall_s']:.0f}"
        print(f"{r['seed']:>4} {r['arm']:>8} {first:>9} {wall:>8} {r['total_ns']:9.2f} "
              f"{r['wall_s']:7.0f} {r['restarts']:8d} {r['first_restart_ns']:14.2f} "
              f"{r['auc']:6.3f}")
    s = result["summary"]
    for arm in (a for a in ARMS if s[a]["runs"]):
        print(f"{arm:>8}: median first passage {s[arm]['median_first_ns']:.3f} ns "
              f"(censored at the budget), reached {s[arm]['reached']}/{s[arm]['runs']}, "
              f"mean coverage AUC {s[arm]['mean_auc']:.3f}")
    if not all(s[arm]["runs"] for arm in ARMS):
        return
    print(f"first passage: steered vs plain {s['first_passage_vs_plain']:.1f}×, "
          f"steered vs random restarts {s['first_passage_vs_random']:.1f}×")
    print(f"coverage AUC: steered vs plain {s['auc_vs_plain']:.2f}×, "
          f"steered vs random restarts {s['auc_vs_random']:.2f}×")


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    passage, cover = figure.subplots(1, 2)
    colours = {"plain": "tab:gray", "random": "tab:orange", "steered": "tab:blue"}
    for x, arm in enumerate(ARMS):
        runs = [r for r in result["runs"] if r["arm"] == arm]
        if not runs:
            continue
        values = [r["first_ns"] if r["first_ns"] is not None else result["budget_ns"]
                  for r in runs]
        reached = [r["first_ns"] is not None for r in runs]
        passage.scatter([x] * len(values), values, c=[colours[arm] if ok else "white"
                                                      for ok in reached],
                        edgecolors=colours[arm], s=40)
        passage.hlines(np.median(values), x - 0.25, x + 0.25, colors=colours[arm])
        curves = np.array([r["coverage"] for r in runs])
        cover.plot(result["grid_ns"], 100 * curves.mean(axis=0), color=colours[arm], label=arm)
    passage.axhline(result["budget_ns"], ls=":", color="black", lw=0.8)
    passage.set_xticks(range(len(ARMS)), ARMS)
    passage.set_ylabel("total ns to the rare basin (open: not reached)")
    passage.set_title("first passage to C7ax/αL (30° < φ < 100°)", fontsize="medium")
    cover.set_xlabel("total simulated time of the ensemble (ns)")
    cover.set_ylabel(f"φ/ψ cells visited (% of {result['accessible']}), mean over seeds")
    cover.set_title("coverage", fontsize="medium")
    cover.legend()
    for ax in (passage, cover):
        ax.grid(alpha=0.3)
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget-ns", type=float, default=15.0)
    parser.add_argument("--sims", type=int, default=4)
    parser.add_argument("--solvent", choices=["vacuum", "implicit"], default="vacuum")
    parser.add_argument("--temperature", type=float, default=400.0)
    parser.add_argument("--report-ps", type=float, default=1.0)
    parser.add_argument("--segment-ns", type=float, default=0.02)
    parser.add_argument("--n-outliers", type=int, default=20)
    parser.add_argument("--max-minutes", type=int, default=20, help="cap per run")
    parser.add_argument("--quick", action="store_true", help="2 seeds, a quarter of the budget")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "sampling")
    parser.add_argument("--analyse-only", action="store_true", help="reuse the runs in --out")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.budget_ns = 2, args.budget_ns / 4
    os.environ.setdefault("ADIOS2_IP", "127.0.0.1")
    print(f"sampling study {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    runs: dict[tuple[int, str], Path] = {}
    for seed in range(1, args.seeds + 1):
        shift = (seed - 1) % len(args.arms)
        for arm in args.arms[shift:] + args.arms[:shift]:  # alternate the order
            path = (args.out / f"seed{seed}" / arm).resolve()
            runs[seed, arm] = path if args.analyse_only else run_arm(arm, seed, args)
    result = analyse(runs, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sampling.json").write_text(json.dumps(result, indent=1))
    plot(result, args.out / "sampling.png")
    report(result, args)
    print(f"figure: {args.out / 'sampling.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
