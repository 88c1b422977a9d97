"""Launch and stop latency of `python -m ddmd_stream.launch`: EnTK and local engines.

    python benchmarks/startup.py [--quick] [--engines local entk] [--run-s 10] [--compare]
    python benchmarks/startup.py --tasks 4 16 32 [--compare] [--repeats 1] [--plot PNG]

--compare runs EnTK with our RADICAL settings (ddmd_stream/workflow/resources.py, entk.py) on
and off (DDMD_RADICAL_TUNING=0), alternating; --tasks measures N trivial tasks through the
real EnTK engine path instead of FAST_RUN (entk_tasks.py). EnTK runs set RADICAL_PROFILE so
that RADICAL's profiles give the breakdown (radical_profiles.py).

For each engine, a small run (tests/test_e2e.py's FAST_RUN: 2 simulations of FS-peptide on
the CPU platform, 1 aggregator, trainer, agent; SST) is launched as a subprocess
(`python -m ddmd_stream.launch cfg.yaml`). Measured from the moment the launcher is started:

- prepared: the run directory's config.yaml exists (config checked, PDBs read, plan written);
- engine_start (EnTK only): the launcher's `engine_start` event (AppManager built);
- each task's process creation (/proc, while it runs), its `task_start` event (process up,
  task file and config read; the role's heavy imports - OpenMM, TensorFlow - come after) and
  its first heartbeat (status.json, written from the role's main loop: a simulation has built
  its system and opened its stream, the aggregator its store, trainer/agent their windows);
  "all running" = the last first heartbeat (also shown: the last task_start).

After --run-s more seconds, RUN/STOP is written and the time until the launcher exits is
measured, together with the time by which every task had ended (its `task_end` event).
No process of the run may be left behind. For EnTK, the RADICAL session's profiles under
RUN/radical/ give the pilot's launch and agent start-up. Target: launch -> all running
<= 15 s locally.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ADIOS2_IP", "127.0.0.1")

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from entk_tasks import TASK_COUNTS, measure_tasks, plot_tasks, print_tasks
from radical_profiles import phase_durations, radical_breakdown

REPO = Path(__file__).resolve().parents[1]
SST_XML = REPO / "adios_xml" / "sst.xml"

# tests/test_e2e.py FAST_RUN (engine and run_dir set per measurement)
FAST_RUN = {
    "workflow": {"duration_s": 240, "heartbeat_s": 1},
    "simulation": {"num_simulations": 2, "platform": "CPU", "cpu_threads": 1, "seed": 7,
                   "report_interval_ps": 0.2, "segment_length_ns": 0.002},
    "aggregation": {"flush_interval_s": 0.3},
    "training": {"min_samples": 30, "epochs": 2, "batch_size": 16,
                 "cvae": {"conv_filters": [8, 8, 8, 8], "dense_units": 16}},
    "agent": {"min_samples": 30, "outlier_band": [2, 20], "n_outliers": 10,
              "cycle_interval_s": 2, "eps": 0.5, "dbscan_min_samples": 4},
    "streams": {"open_timeout_s": 120},
}
ENGINE_START = re.compile(r"engine_start (\{.*\})")


def task_events(run: Path) -> dict[str, dict[str, dict]]:
    """task name -> {event name: first such event} for task_start/task_end."""
    from ddmd_stream.events import read_events

    found: dict[str, dict[str, dict]] = {}
    for path in sorted((run / "tasks").glob("*/events.jsonl")):
        firsts: dict[str, dict] = {}
        for event in read_events(path):
            if event["event"] in ("task_start", "task_end"):
                firsts.setdefault(event["event"], event)
        found[path.parent.name] = firsts
    return found


def process_created(pid: int) -> float:
    """time.time() at which process `pid` started (10 ms resolution; NaN when it is gone).

    From /proc: psutil's create_time builds on the boot time in whole seconds.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        now = time.time()
    except (OSError, ValueError):
        return float("nan")
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime
    return now - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def record_first_heartbeats(run: Path, beats: dict[str, float]) -> None:
    """Add the heartbeat time of tasks whose status.json appeared since the last call."""
    for status in (run / "tasks").glob("*/status.json"):
        if status.parent.name not in beats:
            with contextlib.suppress(OSError, ValueError, KeyError):
                beats[status.parent.name] = float(json.loads(status.read_text())["time"])


def engine_start_time(log: Path) -> float | None:
    try:
        match = ENGINE_START.search(log.read_text())
    except OSError:
        return None
    if not match:
        return None
    try:
        return float(ast.literal_eval(match.group(1))["time"])
    except (ValueError, SyntaxError, KeyError):
        return None


def launcher_env(engine: str, tuned: bool) -> dict[str, str]:
    """The launcher's environment: EnTK runs keep RADICAL's profiles (for the breakdown) and
    have our RADICAL settings on or off (DDMD_RADICAL_TUNING)."""
    if engine != "entk":
        return dict(os.environ)
    return {**os.environ, "RADICAL_PROFILE": "TRUE", "DDMD_RADICAL_TUNING": "1" if tuned else "0"}


def measure(engine: str, run_s: float, tmp: Path, tuned: bool = True) -> dict:
    from ddmd_stream.workflow.cleanup import find_leftovers

    label = engine if engine == "local" else f"entk-{'tuned' if tuned else 'untuned'}"
    run = tmp / f"run-{label}"
    config = {**FAST_RUN, "workflow": {**FAST_RUN["workflow"], "engine": engine,
                                       "run_dir": str(run)},
              "streams": {**FAST_RUN["streams"], "adios_xml": str(SST_XML)}}
    expected = config["simulation"]["num_simulations"] + 1 + 2
    config_file = tmp / f"{label}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    log_path = tmp / f"{label}.log"
    created: dict[str, float] = {}
    beats: dict[str, float] = {}
    prepared = None
    with open(log_path, "w") as log:
        t0 = time.time()
        launcher = subprocess.Popen([sys.executable, "-m", "ddmd_stream.launch", str(config_file)],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env=launcher_env(engine, tuned))
        try:
            deadline = time.monotonic() + 300
            while True:
                if prepared is None and (run / "config.yaml").exists():
                    prepared = time.time() - t0
                events = task_events(run)
                for name, firsts in events.items():
                    start = firsts.get("task_start")
                    if start and name not in created:
                        created[name] = process_created(int(start.get("pid", -1)))
                record_first_heartbeats(run, beats)
                started = {n: f["task_start"]["t"] for n, f in events.items() if "task_start" in f}
                if len(started) >= expected and len(beats) >= expected:
                    break
                if launcher.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"not all tasks started; see {log_path}")
                time.sleep(0.1)
            time.sleep(run_s)
            t_stop = time.time()
            (run / "STOP").write_text("benchmark stop\n")
            launcher.wait(timeout=300)
            t_exit = time.time()
        finally:
            if launcher.poll() is None:
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()
    events = task_events(run)
    ends = [f["task_end"]["t"] for f in events.values() if "task_end" in f]
    leftovers = find_leftovers(run)
    return {
        "engine": label, "t0": t0, "run": run, "code": launcher.returncode,
        "prepared": prepared,
        "engine_start": (lambda t: None if t is None else t - t0)(engine_start_time(log_path)),
        "tasks": {name: (created.get(name, float("nan")) - t0, events[name]["task_start"]["t"] - t0,
                         beats[name] - t0,
                         events[name].get("task_end", {}).get("t", float("nan")) - t_stop)
                  for name in sorted(started)},
        "all_started": max(started.values()) - t0,
        "all_running": max(beats.values()) - t0,
        "first_running": min(beats.values()) - t0,
        "stop_to_tasks_ended": (max(ends) - t_stop) if len(ends) >= expected else None,
        "stop_to_exit": t_exit - t_stop,
        "leftovers": len(leftovers),
        "radical": radical_breakdown(run, t0, t_stop) if engine == "entk" else [],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="local engine only, --run-s 3")
    parser.add_argument("--engines", nargs="+", choices=["local", "entk"])
    parser.add_argument("--run-s", type=float, help="seconds to run once all tasks run (10)")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    parser.add_argument("--compare", action="store_true",
                        help="EnTK with our RADICAL settings on and off, alternating")
    parser.add_argument("--tasks", nargs="*", type=int, metavar="N",
                        help=f"trivial tasks through EnTK instead of FAST_RUN ({TASK_COUNTS})")
    parser.add_argument("--repeats", type=int, default=1, help="runs per task count and arm")
    parser.add_argument("--plot", type=Path, help="figure of --tasks (benchmarks/figures/)")
    return parser.parse_args(argv)


def run_task_counts(args: argparse.Namespace, tmp: Path) -> int:
    counts = args.tasks or list(TASK_COUNTS)
    arms = [True, False] if args.compare else [True]
    results = []
    for repeat in range(args.repeats):
        for n in counts:
            for tuned in arms if repeat % 2 == 0 else arms[::-1]:
                results.append(measure_tasks(n, tuned, tmp, f"{repeat}-{int(tuned)}"))
                r = results[-1]
                print(f"  {n} tasks, {'tuned' if tuned else 'untuned'}: all running after "
                      f"{r['all_running']:.1f} s, load average {r['load']:.2f}", flush=True)
    print_tasks(results)
    if args.plot:
        plot_tasks(results, args.plot)
    return 0 if all(r["code"] == 0 for r in results) else 1


def run_fast_runs(args: argparse.Namespace, tmp: Path) -> list[dict]:
    engines = args.engines or (["local"] if args.quick else ["local", "entk"])
    run_s = args.run_s if args.run_s is not None else (3.0 if args.quick else 10.0)
    print(f"FAST_RUN (2 sims, 1 aggregator, trainer, agent) per engine {engines}"
          f"{' (EnTK with our RADICAL settings on, then off)' if args.compare else ''}", flush=True)
    results = []
    for engine in engines:
        for tuned in [True, False] if engine == "entk" and args.compare else [True]:
            results.append(measure(engine, run_s, tmp, tuned))
            print(f"  {results[-1]['engine']}: all running after "
                  f"{results[-1]['all_running']:.1f} s, load average {os.getloadavg()[0]:.2f}",
                  flush=True)
    return results


def print_fast_run(r: dict) -> None:
    print()
    print(f"engine {r['engine']} (launcher exit code {r['code']}, leftover processes "
          f"{r['leftovers']}), seconds after launch:")
    print(f"  run dir prepared           {r['prepared']:7.1f}")
    if r["engine_start"] is not None:
        print(f"  engine_start event         {r['engine_start']:7.1f}")
    for label, when, ref in r["radical"]:
        if ref == "launch":
            print(f"  radical: {label:<23} {when:7.1f}")
    for name, seconds in phase_durations(r["radical"]):
        print(f"  phase: {name:<36} {seconds:6.1f} s")
    print(f"  {'task':<16} {'process created':>15} {'task_start':>10} {'1st heartbeat':>13}"
          f" {'task_end after STOP':>19}")
    for name, (made, start, beat, end) in r["tasks"].items():
        print(f"  {name:<16} {made:15.1f} {start:10.1f} {beat:13.1f} {end:19.1f}")
    print(f"  launch -> all task_start        {r['all_started']:7.1f}")
    print(f"  launch -> first task heartbeat  {r['first_running']:7.1f}")
    print(f"  launch -> all tasks heartbeat   {r['all_running']:7.1f}"
          "   (all running; target <= 15 s locally)")
    if r["engine"].startswith("entk"):
        print(f"  EnTK launch → every task running: {r['all_running']:.1f} s ({r['engine']})")
    ended = r["stop_to_tasks_ended"]
    print(f"  STOP -> every task ended        {'-' if ended is None else f'{ended:7.1f}'}")
    for label, when, ref in r["radical"]:
        if ref == "STOP":
            print(f"  STOP -> radical: {label:<20} {when:7.1f}")
    print(f"  STOP -> launcher exit           {r['stop_to_exit']:7.1f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ddmd-startbench-") as scratch:
        tmp = Path(tempfile.mkdtemp(prefix="ddmd-startbench-") if args.keep else scratch)
        if args.keep:
            print(f"run directories kept in {tmp}")
        if args.tasks is not None:
            return run_task_counts(args, tmp)
        results = run_fast_runs(args, tmp)
    for r in results:
        print_fast_run(r)
    print()
    print(f"{'engine':<13} {'launch->all task_start s':>24} {'launch->all running s':>22}"
          f" {'STOP->exit s':>13} {'leftovers':>9}")
    for r in results:
        print(f"{r['engine']:<13} {r['all_started']:24.1f} {r['all_running']:22.1f}"
              f" {r['stop_to_exit']:13.1f} {r['leftovers']:9d}")
    print(f"load average now {os.getloadavg()}")
    return 0 if all(r["code"] == 0 and r["leftovers"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
