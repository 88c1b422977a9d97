"""Streaming (S, DeepDriveMD-S) vs sequential (F, DeepDriveMD-F): simulated ns per hour on the
same resources and the same wall time.

    python benchmarks/s_vs_f.py [--minutes 5] [--sims 2] [--engine entk|local]
                                [--config launch/local.yaml] [--out runs/s_vs_f]
                                [--modes streaming sequential]

Both runs use the shipped local example (`launch/local.yaml`: FS-peptide, implicit solvent,
OpenMM CPU with one thread per simulation, 0.02 ns segments, the light CVAE) with only
`workflow.mode`, `workflow.duration_s`, `workflow.run_dir` and `simulation.num_simulations`
changed, launched one after the other with `python -m ddmd_stream.launch` on RADICAL-EnTK (as
a user would). S runs every task at once; F repeats stages of one segment per simulation, one
training round and one agent cycle (each a fresh process).

Printed from each run's task events (RUN/tasks/*/events.jsonl):
- simulated ns (sum of the segments' `ns`) and ns per hour of the allocated wall time
  (`--minutes`; engine start-up counts against it, as it would in a batch job);
- the S/F ratio of those (target >= 2.0; the paper reports 1.6 at scale);
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
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ITERATION = {"sim": "segment", "aggregator": "write", "trainer": "train_round", "agent": "cycle"}
ROLES = ("sim", "aggregator", "trainer", "agent")


LOW_PRIORITY = {"pre_exec": ["renice -n 19 -p $$ > /dev/null"],
                "environment": {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}}


def write_config(base: Path, mode: str, run_dir: Path, minutes: float, sims: int, engine: str,
                 ml_low_priority: bool = False) -> Path:
    """The base config with this run's mode, wall time, run directory and simulation count."""
    from ddmd_stream.config import dump_config, load_config

    config = load_config(base)
    wf = config.workflow
    wf.mode, wf.duration_s, wf.run_dir, wf.engine = mode, minutes * 60.0, run_dir, engine
    wf.on_existing = "overwrite"
    config.simulation.num_simulations = sims
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


def analyse(run_dir: Path, wall_s: float) -> dict[str, Any]:
    """Simulated ns and utilization per role from the run's events."""
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
            "ns_per_md_hour": ns / md_s * 3600.0 if md_s else None}


def make_report(run_dir: Path) -> None:
    from ddmd_stream import report

    with open(os.devnull, "w") as sink:
        stdout, sys.stdout = sys.stdout, sink
        try:
            report.main([str(run_dir)])
        finally:
            sys.stdout = stdout


def print_results(results: dict[str, dict[str, Any]], minutes: float, sims: int) -> None:
    print(f"\nS vs F: FS-peptide, {sims} simulations, {minutes:g} min wall time each, "
          f"{platform.node()} ({os.cpu_count()} cores), load {os.getloadavg()[0]:.1f}")
    header = (f"{'mode':11s} {'ns':>7s} {'ns/hour':>8s} {'segments':>8s} {'restarts':>8s} "
              f"{'ns/h in MD':>10s}  utilization busy/alive per role")
    print(header)
    for mode, result in results.items():
        roles = ", ".join(f"{role} {100 * r['busy']:.0f}/{100 * r['alive']:.0f} %"
                          for role, r in result["roles"].items())
        in_md = result["ns_per_md_hour"]
        print(f"{mode:11s} {result['ns']:7.4f} {result['ns_per_hour']:8.4f} "
              f"{result['segments']:8d} {result['restarts']:8d} "
              f"{in_md if in_md is None else round(in_md, 3)!s:>10s}  {roles}")
    if {"streaming", "sequential"} <= results.keys() and results["sequential"]["ns"] > 0:
        ratio = results["streaming"]["ns_per_hour"] / results["sequential"]["ns_per_hour"]
        print(f"S/F simulated ns per hour: {ratio:.2f} (target >= 2.0; paper 1.6)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="wall time of each run")
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
    results = {}
    for mode in args.modes:
        run_dir = (args.out / mode).resolve()
        config_file = write_config(args.config, mode, run_dir, args.minutes, args.sims,
                                   args.engine, args.ml_low_priority)
        print(f"{mode}: running {args.minutes:g} min in {run_dir} ...", flush=True)
        launcher_s = launch(config_file, args.out / f"{mode}.log")
        results[mode] = {**analyse(run_dir, args.minutes * 60.0), "launcher_s": launcher_s}
        make_report(run_dir)
        print(f"{mode}: done in {launcher_s:.0f} s; report in {run_dir / 'report'}", flush=True)
    (args.out / "s_vs_f.json").write_text(json.dumps(results, indent=1))
    if args.ml_low_priority:
        print("(trainer and agent at nice 19, one TensorFlow thread)")
    print_results(results, args.minutes, args.sims)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
