"""Streaming (S, DeepDriveMD-S) vs sequential (F, DeepDriveMD-F): simulated ns per hour on the
same resources and the same wall time, in alternating pairs.

    python benchmarks/s_vs_f.py [--pairs 3] [--minutes 5] [--segment-ns 0.04] [--sims 2]
                                [--engine entk|local] [--config launch/local.yaml]
                                [--out runs/s_vs_f] [--modes streaming sequential]

One invocation runs --pairs pairs of runs, one after the other on the same machine, in the
order S,F, F,S, S,F, ... (each mode first in half of the pairs, so that a drift of machine
load hits both alike), and prints each pair's S/F ratio of simulated ns per hour with their
median, min and max: `S/F paired (K pairs): N.N×`.

All runs use the shipped local example (`launch/local.yaml`: FS-peptide, implicit solvent,
OpenMM CPU with one thread per simulation, the light CVAE) with only `workflow.mode`,
`workflow.duration_s`, `workflow.run_dir`, `simulation.num_simulations` and (--segment-ns)
`simulation.segment_length_ns` changed, launched one after the other with
`python -m ddmd_stream.launch` on RADICAL-EnTK (as a user would; --engine local where EnTK's
start-up would dominate short runs). S runs every task at once; F repeats stages of one
segment per simulation, one training round and one agent cycle (each a fresh process).

Printed from each run's task events (RUN/tasks/*/events.jsonl):
- simulated ns (sum of the segments' `ns`) and ns per hour of the allocated wall time
  (`--minutes`; engine start-up counts against it, as it would in a batch job);
- the S/F ratio of those per pair, and their median/min/max (target >= 2.0; the paper
  reports 1.6 at scale);
- the bound on S/F for this workload: what S would reach with its simulations at F's speed
  in MD and never idle (S gains no more than the time F's simulations wait for its ML
  stages and process starts);
- the ML work each run did: training rounds, samples x epochs trained, agent cycles;
- task utilization: per role, the time its tasks spent in iterations (segments, aggregator
  writes, training rounds, agent cycles) over (tasks x wall time), and the time they were alive
  at all over the same.
Each run also gets its report (`python -m ddmd_stream.report RUN`) under RUN/report/.

On a machine with fewer cores than tasks (the 2-core development VM: 2 simulations +
aggregator + trainer + agent), S's always-running trainer takes CPU from its simulations, which
F's simulations never share; `--ml-low-priority` runs trainer and agent at nice 19 with one
TensorFlow thread in both modes (the same config for both), as one would on shared cores.
"ns/h in MD" (simulated ns per hour spent inside segments) shows that per-simulation speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ITERATION = {"sim": "segment", "aggregator": "write", "trainer": "train_round", "agent": "cycle"}
ROLES = ("sim", "aggregator", "trainer", "agent")
ABBREVIATION = {"streaming": "S", "sequential": "F"}


LOW_PRIORITY = {"pre_exec": ["renice -n 19 -p $$ > /dev/null"],
                "environment": {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}}


def write_config(base: Path, mode: str, run_dir: Path, minutes: float, sims: int, engine: str,
                 ml_low_priority: bool = False, segment_ns: float | None = None) -> Path:
    """The base config with this run's mode, wall time, run directory, simulation count and
    (when given) segment length."""
    from ddmd_stream.config import dump_config, load_config

    config = load_config(base)
    wf = config.workflow
    wf.mode, wf.duration_s, wf.run_dir, wf.engine = mode, minutes * 60.0, run_dir, engine
    wf.on_existing = "overwrite"
    config.simulation.num_simulations = sims
    if segment_ns is not None:
        config.simulation.segment_length_ns = segment_ns
    config.resources.walltime_min = max(config.resources.walltime_min, int(minutes) + 10)
    if ml_low_priority:  # trainer and agent yield the cores to the simulations
        for role in (config.resources.trainer, config.resources.agent):
            role.pre_exec = [*role.pre_exec, *LOW_PRIORITY["pre_exec"]]
            role.environment = {**role.environment, **LOW_PRIORITY["environment"]}
    path = run_dir.parent / f"{mode}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_config(config))
    return path


def launch(config_file: Path, log: Path) -> float:
    """Run the workflow; returns the launcher's wall time (s)."""
    started = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, "-m", "ddmd_stream.launch", str(config_file)],
                               stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        print(f"warning: launcher exited {code}; see {log}", file=sys.stderr)
    return time.monotonic() - started


def ml_work(events: list[dict]) -> dict[str, int]:
    """Training rounds, samples x epochs trained and agent cycles of a run."""
    rounds = [e for e in events if e["event"] == "train_round"]
    return {"rounds": len(rounds),
            "sample_epochs": sum(int(e.get("samples", 0)) * int(e.get("epochs", 0))
                                 for e in rounds),
            "cycles": sum(e["event"] == "cycle" for e in events)}


def analyse(run_dir: Path, wall_s: float) -> dict[str, Any]:
    """Simulated ns, ML work and utilization per role from the run's events."""
    from ddmd_stream.events import read_run_events
    from ddmd_stream.report.load import role_of, task_seconds

    events = read_run_events(run_dir)
    by_task: dict[str, list[dict]] = {}
    for event in events:
        by_task.setdefault(event["task"], []).append(event)
    ns = sum(float(e.get("ns", 0.0)) for e in events if e["event"] == "segment")
    roles: dict[str, dict[str, float]] = {}
    for role in ROLES:
        tasks = {t: ev for t, ev in by_task.items() if role_of(t) == role}
        if not tasks:
            continue
        busy = sum(float(e.get("dur", 0.0)) for ev in tasks.values() for e in ev
                   if e["event"] == ITERATION[role])
        alive = sum(task_seconds(ev) for ev in tasks.values())
        iterations = sum(e["event"] == ITERATION[role] for ev in tasks.values() for e in ev)
        roles[role] = {"tasks": len(tasks), "iterations": iterations,
                       "busy": busy / (len(tasks) * wall_s), "alive": alive / (len(tasks) * wall_s)}
    segments = [e for e in events if e["event"] == "segment"]
    md_s = sum(float(e.get("md_s", 0.0)) for e in segments)
    return {"ns": ns, "ns_per_hour": ns / wall_s * 3600.0, "roles": roles,
            "segments": len(segments), "restarts": sum(e["event"] == "restart" for e in events),
            "ns_per_md_hour": ns / md_s * 3600.0 if md_s else None, **ml_work(events)}


def make_report(run_dir: Path) -> None:
    from ddmd_stream.report.__main__ import main as report

    with open(os.devnull, "w") as sink:
        stdout, sys.stdout = sys.stdout, sink
        try:
            report([str(run_dir)])
        finally:
            sys.stdout = stdout


def pair_order(modes: list[str], pair: int) -> list[str]:
    """S,F then F,S then S,F ...: each mode goes first in half of the pairs."""
    return list(modes) if pair % 2 == 0 else list(reversed(modes))


def run_one(args: argparse.Namespace, mode: str, pair: int) -> dict[str, Any]:
    """Launch one run of `mode` in pair `pair`; its figures from the events."""
    run_dir = (args.out / f"pair-{pair}" / mode).resolve()
    config_file = write_config(args.config, mode, run_dir, args.minutes, args.sims,
                               args.engine, args.ml_low_priority, args.segment_ns)
    print(f"pair {pair} {mode}: running {args.minutes:g} min in {run_dir} "
          f"(load {os.getloadavg()[0]:.1f}) ...", flush=True)
    launcher_s = launch(config_file, run_dir.parent / f"{mode}.log")
    result = {**analyse(run_dir, args.minutes * 60.0), "launcher_s": launcher_s,
              "pair": pair, "mode": mode}
    make_report(run_dir)
    print_run(result)
    return result


def print_run(result: dict[str, Any]) -> None:
    roles = ", ".join(f"{role} {100 * r['busy']:.0f}/{100 * r['alive']:.0f} %"
                      for role, r in result["roles"].items())
    in_md = result["ns_per_md_hour"]
    print(f"pair {result['pair']} {ABBREVIATION[result['mode']]}: {result['ns']:.4f} ns, "
          f"{result['ns_per_hour']:.4f} ns/h ({in_md if in_md is None else round(in_md, 3)} "
          f"ns/h in MD), {result['segments']} segments, {result['restarts']} restarts; "
          f"ML: {result['rounds']} training rounds ({result['sample_epochs']} samples x epochs), "
          f"{result['cycles']} agent cycles; launcher {result['launcher_s']:.0f} s; "
          f"busy/alive: {roles}", flush=True)


def print_results(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nS vs F: FS-peptide, {args.sims} simulations, {args.minutes:g} min wall time per run,"
          f" segments of {args.segment_ns if args.segment_ns else 'the config'} ns, "
          f"{args.engine} engine, {platform.node()} ({os.cpu_count()} cores), "
          f"load {os.getloadavg()}")
    print(f"{'pair':>4s} {'mode':11s} {'ns':>7s} {'ns/hour':>8s} {'segments':>8s} "
          f"{'ns/h in MD':>10s} {'rounds':>6s} {'samp x ep':>9s} {'cycles':>6s}")
    for r in results:
        in_md = r["ns_per_md_hour"]
        print(f"{r['pair']:4d} {r['mode']:11s} {r['ns']:7.4f} {r['ns_per_hour']:8.4f} "
              f"{r['segments']:8d} {in_md if in_md is None else round(in_md, 3)!s:>10s} "
              f"{r['rounds']:6d} {r['sample_epochs']:9d} {r['cycles']:6d}")
    ratios = pair_ratios(results)
    for pair, ratio in ratios.items():
        print(f"pair {pair}: S/F {ratio:.2f}")
    if ratios:
        values = list(ratios.values())
        print(f"S/F paired ({len(values)} pairs): {statistics.median(values):.1f}× "
              f"(median; min {min(values):.2f}, max {max(values):.2f}; target >= 2.0; "
              f"paper 1.6)")
    bounds = ceilings(results, args.sims)
    if bounds:
        print(f"bound on this workload: S/F <= {statistics.median(bounds):.2f}× (median over "
              f"the F runs; min {min(bounds):.2f}, max {max(bounds):.2f}): S's simulations "
              "at F's speed in MD and never idle")


def ceilings(results: list[dict[str, Any]], sims: int) -> list[float]:
    """Per F run: the S/F that S would reach if its simulations ran at F's speed in MD and
    were never idle (F's ns per hour over the share of the wall time its simulations spent in
    MD); S can beat F by no more than F's idle time."""
    return [r["ns_per_md_hour"] * sims / r["ns_per_hour"] for r in results
            if r["mode"] == "sequential" and r["ns_per_md_hour"] and r["ns_per_hour"] > 0]


def pair_ratios(results: list[dict[str, Any]]) -> dict[int, float]:
    """S/F of simulated ns per hour for each pair that has both runs (and F did MD)."""
    by_pair: dict[int, dict[str, float]] = {}
    for r in results:
        by_pair.setdefault(r["pair"], {})[r["mode"]] = r["ns_per_hour"]
    return {pair: runs["streaming"] / runs["sequential"] for pair, runs in by_pair.items()
            if runs.get("sequential", 0) > 0 and "streaming" in runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3, help="S/F pairs, alternating order")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall time of each run")
    parser.add_argument("--segment-ns", type=float, default=0.04,
                        help="simulation.segment_length_ns of every run (0.04 ns: about 2 min "
                        "of FS-peptide MD on one core); 0 keeps the config's")
    parser.add_argument("--sims", type=int, default=2, help="simulations")
    parser.add_argument("--engine", choices=["entk", "local"], default="entk")
    parser.add_argument("--config", type=Path, default=REPO / "launch" / "local.yaml",
                        help="base config (its mode, wall time and run_dir are replaced)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "s_vs_f")
    parser.add_argument("--modes", nargs="+", default=["streaming", "sequential"],
                        choices=["streaming", "sequential"])
    parser.add_argument("--ml-low-priority", action="store_true",
                        help="both modes: trainer and agent at nice 19 with one TensorFlow "
                        "thread (via resources.trainer/agent pre_exec and environment), so "
                        "that on few cores they do not slow the simulations down")
    args = parser.parse_args(argv)
    args.segment_ns = args.segment_ns or None
    print(f"load average at start: {os.getloadavg()}", flush=True)
    results = [run_one(args, mode, pair)
               for pair in range(args.pairs) for mode in pair_order(args.modes, pair)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "s_vs_f.json").write_text(json.dumps(results, indent=1))
    if args.ml_low_priority:
        print("(trainer and agent at nice 19, one TensorFlow thread)")
    print_results(results, args)
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
