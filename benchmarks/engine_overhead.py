"""What the engine itself costs: the same short run on the local engine and on RADICAL-EnTK.

    python benchmarks/engine_overhead.py [--pairs 2] [--window-s 30] [--settle-s 5] [--untuned]
                                         [--top N]

Each pair launches startup.py's FAST_RUN (2 FS-peptide simulations on the CPU platform,
1 aggregator, trainer, agent; SST) once per engine, alternating which goes first. Once every
task has sent its first heartbeat and `--settle-s` more seconds passed, the CPU time of the
run's processes is sampled over `--window-s` (psutil) and summed per kind: our tasks by role,
RADICAL's `rp.*` processes (bridges, components, agent), the launcher (EnTK's threads live
in it, its bridges in a fork of it: both count as launcher) and anything else of the run
(shell wrappers, watchdogs). Frames stored per second
are the aggregator's `write` events in the window. RADICAL runs with its defaults as
ddmd_stream sets them (profiles off, workflow/radical_patches.py); --untuned adds a third arm,
EnTK with `DDMD_RADICAL_TUNING=0` (RADICAL as shipped). Prints per arm and the ratios.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from startup import FAST_RUN, SST_XML, record_first_heartbeats, task_events

ROLES = ("sim", "aggregate", "train", "agent")
KINDS = ("sim", "aggregate", "train", "agent", "rp.*", "launcher", "other")
ENGINE_KINDS = ("rp.*", "launcher")


def process_kind(proc: psutil.Process, launcher_pid: int) -> str:
    """The launcher and its forks (EnTK runs its queue and pubsub bridges in one) are
    "launcher"; RADICAL's own processes "rp.*"; our tasks by role."""
    name, cmdline = proc.name(), " ".join(proc.cmdline())
    if proc.pid == launcher_pid or "ddmd_stream.launch" in cmdline:
        return "launcher"
    if name.startswith("rp.") or "radical-pilot" in cmdline:
        return "rp.*"
    for role in ROLES:
        if f"ddmd_stream.{role}" in cmdline:
            return role
    return "other"


def process_label(proc: psutil.Process) -> str:
    """A short name of a process: RADICAL's own process title, else its command line."""
    name = proc.name()
    return name if name.startswith("rp.") else " ".join(proc.cmdline())[-60:]


def cpu_by_process(run: Path, launcher: subprocess.Popen) -> dict[int, tuple[str, float, str]]:
    """pid -> (kind, CPU seconds so far, label) of the launcher and every process of the run."""
    from ddmd_stream.workflow.cleanup import find_leftovers

    procs = {p.pid: p for p in find_leftovers(run)}
    root = psutil.Process(launcher.pid)
    for proc in [root, *root.children(recursive=True)]:
        procs.setdefault(proc.pid, proc)
    out = {}
    for pid, proc in procs.items():
        try:
            times = proc.cpu_times()
            out[pid] = (process_kind(proc, launcher.pid), times.user + times.system,
                        process_label(proc))
        except psutil.Error:
            continue
    return out


def frames_written(run: Path, start: float, end: float) -> int:
    from ddmd_stream.events import read_events

    total = 0
    for path in (run / "tasks").glob("aggregator-*/events.jsonl"):
        total += sum(int(e.get("frames", 0)) for e in read_events(path)
                     if e.get("event") == "write" and start <= e.get("t", 0) < end)
    return total


def wait_all_running(run: Path, launcher: subprocess.Popen, expected: int) -> None:
    beats: dict[str, float] = {}
    deadline = time.monotonic() + 300
    while len(beats) < expected or len(task_events(run)) < expected:
        if launcher.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"not all tasks started in {run}")
        record_first_heartbeats(run, beats)
        time.sleep(0.2)


UNTUNED = "entk-untuned"  # arm: EnTK with DDMD_RADICAL_TUNING=0


def measure(arm: str, tmp: Path, label: str, window_s: float, settle_s: float) -> dict:
    run = tmp / f"run-{label}"
    engine = "local" if arm == "local" else "entk"
    env = {**os.environ, "DDMD_RADICAL_TUNING": "0" if arm == UNTUNED else "1"}
    config = {**FAST_RUN, "workflow": {**FAST_RUN["workflow"], "engine": engine,
                                       "run_dir": str(run)},
              "streams": {**FAST_RUN["streams"], "adios_xml": str(SST_XML)}}
    expected = config["simulation"]["num_simulations"] + 3
    config_file = tmp / f"{label}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    with open(tmp / f"{label}.log", "w") as log:
        launcher = subprocess.Popen([sys.executable, "-m", "ddmd_stream.launch", str(config_file)],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env=env)
        try:
            wait_all_running(run, launcher, expected)
            time.sleep(settle_s)  # start-up transients (imports, minimization) settle
            before, t0 = cpu_by_process(run, launcher), time.time()
            time.sleep(window_s)  # the measurement window itself
            after, t1 = cpu_by_process(run, launcher), time.time()
            (run / "STOP").write_text("benchmark stop\n")
            launcher.wait(timeout=300)
        finally:
            if launcher.poll() is None:
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()
    cores = {kind: 0.0 for kind in KINDS}
    counts = {kind: 0 for kind in KINDS}
    engine_processes = []
    for pid, (kind, cpu, label) in after.items():
        share = (cpu - before.get(pid, (kind, 0.0, label))[1]) / (t1 - t0)
        cores[kind] += share
        counts[kind] += 1
        if kind in ENGINE_KINDS:
            engine_processes.append((share, kind, label))
    return {"engine": arm, "cores": cores, "processes": counts, "code": launcher.returncode,
            "engine_processes": sorted(engine_processes, reverse=True),
            "frames_per_s": frames_written(run, t0, t1) / (t1 - t0), "load": os.getloadavg()[0]}


def print_results(results: list[dict], arms: list[str]) -> None:
    print(f"\n{'engine':<12} {'kind':<10} {'processes':>9} {'% of a core (median)':>21}")
    medians: dict[str, dict[str, float]] = {}
    for engine in arms:
        rows = [r for r in results if r["engine"] == engine]
        medians[engine] = {k: statistics.median(r["cores"][k] for r in rows) for k in KINDS}
        medians[engine]["frames"] = statistics.median(r["frames_per_s"] for r in rows)
        for kind in KINDS:
            procs = max(r["processes"][kind] for r in rows)
            print(f"{engine:<12} {kind:<10} {procs:9d} {100 * medians[engine][kind]:21.1f}")
        engine_cpu = medians[engine]["rp.*"] + medians[engine]["launcher"]
        print(f"{engine:<12} {'engine':<10} {'':>9} {100 * engine_cpu:21.1f}"
              "   (rp.* + launcher; goal under EnTK: <= 10)")
    for r in results:
        print(f"  {r['engine']:<12} frames stored/s {r['frames_per_s']:7.2f}  sim cores "
              f"{r['cores']['sim']:.2f}  exit {r['code']}  load average {r['load']:.1f}")
    local, entk = medians["local"]["frames"], medians["entk"]["frames"]
    print(f"frames stored per second: local {local:.2f}, EnTK {entk:.2f}; "
          f"EnTK/local {entk / local if local else float('nan'):.3f} (goal >= 0.90)")
    if UNTUNED in medians:
        untuned = medians[UNTUNED]
        print(f"EnTK untuned: frames stored/s {untuned['frames']:.2f}, EnTK/local "
              f"{untuned['frames'] / local if local else float('nan'):.3f}; rp.* "
              f"{100 * untuned['rp.*']:.1f} vs {100 * medians['entk']['rp.*']:.1f} % of a core "
              "untuned vs tuned")


def print_top(results: list[dict], top: int) -> None:
    """The `top` engine processes of each EnTK run by CPU over its window."""
    for r in results:
        if r["engine_processes"] and top:
            print(f"  {r['engine']}: the {top} busiest engine processes (% of a core)")
            for share, kind, label in r["engine_processes"][:top]:
                print(f"    {100 * share:5.2f}  {kind:<8}  {label}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--window-s", type=float, default=30.0)
    parser.add_argument("--settle-s", type=float, default=5.0)
    parser.add_argument("--untuned", action="store_true",
                        help=f"add the arm {UNTUNED} (DDMD_RADICAL_TUNING=0)")
    parser.add_argument("--top", type=int, default=0,
                        help="also list the N busiest engine processes of each run")
    args = parser.parse_args(argv)
    arms = ["local", "entk", *([UNTUNED] if args.untuned else [])]
    print(f"FAST_RUN on local and EnTK, {args.pairs} pair(s), {args.window_s:.0f} s windows; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="ddmd-engine-overhead-") as scratch:
        for pair in range(args.pairs):
            for engine in arms[pair % len(arms):] + arms[:pair % len(arms)]:
                results.append(measure(engine, Path(scratch), f"{engine}-{pair}",
                                       args.window_s, args.settle_s))
                r = results[-1]
                print(f"  pair {pair} {engine}: {r['frames_per_s']:.2f} frames/s, rp.* "
                      f"{100 * r['cores']['rp.*']:.1f} %, launcher "
                      f"{100 * r['cores']['launcher']:.1f} %", flush=True)
    print_results(results, arms)
    print_top(results, args.top)
    print(f"load average now {os.getloadavg()}")
    return 0 if all(r["code"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
