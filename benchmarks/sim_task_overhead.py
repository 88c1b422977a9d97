"""Streaming overhead of the real simulation task: bare OpenMM vs `python -m ddmd_stream.sim`.

    python benchmarks/sim_task_overhead.py [--quick] [--pairs 5] [--intervals 0.5 50]
                                           [--steps 2500 25000] [--threads 1]

System: FSD-EY (the packaged `ddmd_stream/data/1FME-unfolded.pdb`, RMSD to
`1FME-folded.pdb`), amber99sbildn + amber99_obc implicit solvent, HBonds, Langevin 300 K, 2 fs,
OpenMM CPU platform with --threads threads.

For each report interval (ps between streamed frames; the paper's is 50 ps = 25,000 steps),
--pairs pairs of runs alternate (bare, task, then task, bare, ...), each a fresh process on the
same config (a plain-mode run directory made by `workflow.prepare.prepare`):

- bare: a subprocess builds the same Simulation (`md.system.build_simulation`, same seed),
  prepares it like the task (`md.system.prepare_start`: minimization) and times
  `simulation.step(N)` with no reporter;
- task: the real simulation task, started by the local engine (`workflow.local.start_task`)
  with its real aggregator, streaming over the shipped `adios_xml/sst.xml` into a BP5 store;
  timed from its first `segment` span (RUN/tasks/sim-0000/events.jsonl: dur, steps, md_s,
  reporter_s, put_s) of N steps; then STOP.

Start-up (imports, system build, minimization, the SST connection) is outside both timings.
Printed per pair: wall ms per step of each side, ns/day, ratio task/bare; per interval the
median/min/max of the ratio as an overhead in %, and the task's own accounting (reporter + put
time over its MD time in the segment), which machine load does not blur. Targets: <= 0.1 % at
50 ps, <= 1 % at 0.5 ps.

Duration: a 50 ps frame is 25,000 steps, 110-190 s of FSD-EY MD on one core of the 2-core
development VM, so the default invocation (5 pairs per interval) takes 25-40 min there
(--budget-min caps it); --quick (0.5 ps only, 3 pairs) about 4 min. Wall-time ratios of
single runs on a shared machine scatter by far more than 0.1 %: read the median over pairs
beside the in-task accounting.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("ADIOS2_IP", "127.0.0.1")

from sim_overhead import ns_per_day  # a sibling script

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "ddmd_stream" / "data"
SST_XML = REPO / "adios_xml" / "sst.xml"
TASK_TIMEOUT_S = 900.0
SEED = 11
TIMESTEP_FS = 2.0

BARE = """
import json, sys, time
from ddmd_stream.config import load_config
from ddmd_stream.md.system import build_simulation, load_pdb, prepare_start
config = load_config(sys.argv[1]).simulation
steps, seed = int(sys.argv[2]), config.seed
simulation, platform = build_simulation(config, load_pdb(config.pdb_file), seed=seed)
prepare_start(simulation, config, config.pdb_file, seed)
started = time.perf_counter()
simulation.step(steps)
print(json.dumps({"dur": time.perf_counter() - started, "steps": steps, "platform": platform}))
"""


def run_config(run_dir: Path, interval_ps: float, steps: int, threads: int) -> Any:
    """A plain-mode run of one FSD-EY simulation whose first segment is `steps` steps."""
    from ddmd_stream.config import parse_config

    raw = {
        "workflow": {"run_dir": str(run_dir), "engine": "local", "mode": "plain",
                     "duration_s": TASK_TIMEOUT_S, "on_existing": "overwrite"},
        "simulation": {"num_simulations": 1, "pdb_file": str(DATA / "1FME-unfolded.pdb"),
                       "reference_pdb": str(DATA / "1FME-folded.pdb"), "platform": "CPU",
                       "cpu_threads": threads, "timestep_fs": TIMESTEP_FS, "seed": SEED,
                       "report_interval_ps": interval_ps,
                       "segment_length_ns": round(steps * TIMESTEP_FS * 1e-6, 9)},
        "aggregation": {"num_aggregators": 1},
        "streams": {"adios_xml": str(SST_XML), "open_timeout_s": 300},
    }
    return parse_config(raw, "<sim_task_overhead>", REPO)


def wait_for_segment(events_file: Path, processes: list[subprocess.Popen]) -> dict[str, Any]:
    """The first `segment` span the task records (fails when a task exits before it)."""
    from ddmd_stream.events import read_events

    end = time.monotonic() + TASK_TIMEOUT_S
    while time.monotonic() < end:
        if events_file.is_file():
            segments = [e for e in read_events(events_file) if e["event"] == "segment"]
            if segments:
                return segments[0]
        if any(p.poll() is not None for p in processes):
            raise SystemExit(f"error: a task ended before its first segment; see "
                             f"{events_file.parent}/stderr")
        time.sleep(0.5)  # polling a file another process writes; no event to wait on
    raise SystemExit(f"error: no segment in {events_file} within {TASK_TIMEOUT_S:g} s")


def time_task(config: Any) -> dict[str, Any]:
    """The real sim + aggregator tasks; the sim's first segment span."""
    from ddmd_stream.rundir import RunDir
    from ddmd_stream.workflow.local import start_task
    from ddmd_stream.workflow.prepare import prepare

    plan = prepare(config)
    processes = [start_task(spec) for spec in plan.tasks]  # aggregator first
    run = RunDir(config.workflow.run_dir)
    try:
        segment = wait_for_segment(run.task_dir("sim", 0) / "events.jsonl", processes)
    finally:
        run.stop_file.touch()
        for process in processes:
            process.wait(timeout=120)
    return segment


def time_bare(config: Any, steps: int, folder: Path) -> dict[str, Any]:
    """A fresh process stepping the same Simulation `steps` steps without a reporter."""
    from ddmd_stream.config import dump_config

    config_file = folder / "bare.yaml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(dump_config(config))
    # a session of its own, as the local engine starts the task (same scheduler autogroup)
    out = subprocess.run([sys.executable, "-c", BARE, str(config_file), str(steps)],
                         capture_output=True, text=True, check=True, start_new_session=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_pair(pair: int, interval_ps: float, steps: int, threads: int,
             folder: Path) -> dict[str, float]:
    """One bare and one task run (order alternating with `pair`); their per-step times."""
    folder = folder / f"{interval_ps:g}ps-{pair}"
    config = run_config(folder / "run", interval_ps, steps, threads)
    order = ("bare", "task") if pair % 2 == 0 else ("task", "bare")
    timed: dict[str, dict[str, Any]] = {}
    for side in order:
        timed[side] = time_bare(config, steps, folder) if side == "bare" else time_task(config)
    bare, task = timed["bare"], timed["task"]
    if task["steps"] != steps:
        raise SystemExit(f"error: the task's segment ran {task['steps']} of {steps} steps")
    result = {"bare_s": bare["dur"] / steps, "task_s": task["dur"] / steps,
              "streaming_share": (task["reporter_s"] + task["put_s"]) / task["md_s"]}
    result["ratio"] = result["task_s"] / result["bare_s"]
    bare_day, task_day = (ns_per_day(1, result[key], TIMESTEP_FS) for key in ("bare_s", "task_s"))
    print(f"  pair {pair} ({'-'.join(order)}): bare {1e3 * result['bare_s']:.4f} ms/step "
          f"({bare_day:.2f} ns/day), task {1e3 * result['task_s']:.4f} ms/step "
          f"({task_day:.2f} ns/day), task/bare "
          f"{result['ratio']:.4f}; in-task reporter+put {100 * result['streaming_share']:.4f} %"
          f" of MD; load {os.getloadavg()[0]:.2f}", flush=True)
    return result


def run_pairs(pairs: int, interval_ps: float, steps: int, threads: int, folder: Path,
              budget_end: float | None) -> list[dict[str, float]]:
    """Up to `pairs` pairs; none started after `budget_end` (monotonic s), at least one."""
    results = []
    for pair in range(pairs):
        if results and budget_end is not None and time.monotonic() > budget_end:
            print(f"  --budget-min reached: {len(results)} of {pairs} pairs", flush=True)
            break
        results.append(run_pair(pair, interval_ps, steps, threads, folder))
    return results


def percent(values: list[float]) -> str:
    return (f"median {statistics.median(values):+.3f} % (min {min(values):+.3f}, "
            f"max {max(values):+.3f})")


def summarize(interval_ps: float, results: list[dict[str, float]]) -> None:
    overheads = [100 * (r["ratio"] - 1) for r in results]
    shares = [100 * r["streaming_share"] for r in results]
    print(f"sim task overhead @{interval_ps:g}ps ({len(results)} pairs): {percent(overheads)}")
    print(f"  in-task reporter+put over MD time @{interval_ps:g}ps: {percent(shares)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="0.5 ps only, 3 pairs of 2,500 steps (~4 min)")
    parser.add_argument("--pairs", type=int, help="bare/task pairs per interval (5; quick 3)")
    parser.add_argument("--intervals", type=float, nargs="+",
                        help="report intervals in ps (0.5 50; quick 0.5)")
    parser.add_argument("--steps", type=int, nargs="+",
                        help="timed steps per run, one per interval (2500 25000; quick 2500)")
    parser.add_argument("--threads", type=int, default=1, help="CPU platform threads")
    parser.add_argument("--budget-min", type=float,
                        help="start no new pair after this many minutes (each interval still "
                        "gets one); the summary lines say how many pairs ran")
    args = parser.parse_args(argv)
    pairs = args.pairs or (3 if args.quick else 5)
    intervals = args.intervals or ([0.5] if args.quick else [0.5, 50.0])
    steps = args.steps or ([2500] if args.quick else [2500, 25000])
    if len(steps) != len(intervals):
        parser.error("--steps: give one count per interval")
    print(f"FSD-EY, CPU platform ({args.threads} threads), {pairs} pairs per interval; load "
          f"average at start {os.getloadavg()}", flush=True)
    budget_end = time.monotonic() + 60.0 * args.budget_min if args.budget_min else None
    summaries = {}
    with tempfile.TemporaryDirectory(prefix="ddmd-simtask-") as tmp:
        for interval, count in zip(intervals, steps, strict=True):
            frames = count / round(interval * 500)
            print(f"@{interval:g} ps: {count} steps per run ({frames:g} frames)", flush=True)
            summaries[interval] = run_pairs(pairs, interval, count, args.threads, Path(tmp),
                                            budget_end)
            summarize(interval, summaries[interval])
    print()
    for interval, results in summaries.items():
        summarize(interval, results)
    print(f"targets: <= 0.1 % at 50 ps, <= 1 % at 0.5 ps; load average at end "
          f"{os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
