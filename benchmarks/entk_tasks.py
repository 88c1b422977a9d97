"""Launch -> every task running for N trivial tasks through the real EnTK engine path.

Used by startup.py (`--tasks 4 16 32 [--compare]`); run alone, `python entk_tasks.py N RUN`
is the measured child: `workflow.entk.run_entk` on N tasks that each write the time they
started and then wait for RUN/STOP. With --compare, runs alternate between our RADICAL
settings on and off (`DDMD_RADICAL_TUNING=0`, ddmd_stream/workflow/resources.py); both arms
set RADICAL_PROFILE so that the RADICAL profiles give the breakdown.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from radical_profiles import phase_durations, radical_breakdown

TASK_COUNTS = (4, 16, 32)
TIMEOUT_S = 600
# argv: stamp file, STOP file; waits at most TIMEOUT_S
TASK = f"""import pathlib, sys, time
pathlib.Path(sys.argv[1]).write_text(repr(time.time()))
stop, end = pathlib.Path(sys.argv[2]), time.time() + {TIMEOUT_S}
while not stop.exists() and time.time() < end:
    time.sleep(0.2)
"""


def child(n: int, run: Path) -> int:
    """Run N trivial tasks under EnTK in `run`; exit 0 when all ended DONE."""
    from ddmd_stream.config import ResourcesConfig
    from ddmd_stream.workflow.entk import run_entk
    from ddmd_stream.workflow.plan import TaskPlan, TaskSpec

    specs = []
    for i in range(n):
        workdir = run / "tasks" / f"sim-{i:04d}"
        specs.append(TaskSpec(role="sim", index=i, executable=sys.executable,
                              arguments=["-c", TASK, str(workdir / "started"), str(run / "STOP"),
                                         str(workdir / "task.yaml")],
                              workdir=workdir))
    events: dict[str, float] = {}
    states = run_entk(TaskPlan(specs, run), ResourcesConfig(), 0,
                      lambda name, data: events.setdefault(name, data["time"]))
    (run / "engine_events.json").write_text(json.dumps(events))
    return 0 if all(state == "DONE" for state in states.values()) else 1


def stamps(run: Path) -> list[float]:
    found = []
    for path in run.glob("tasks/*/started"):
        try:
            found.append(float(path.read_text()))
        except (OSError, ValueError):  # being written
            continue
    return found


def measure_tasks(n: int, tuned: bool, tmp: Path, label: str) -> dict:
    """One child run: launch -> every task running, breakdown, STOP -> exit."""
    run = tmp / f"tasks-{n}-{label}"
    env = {**os.environ, "DDMD_RADICAL_TUNING": "1" if tuned else "0", "RADICAL_PROFILE": "TRUE"}
    with open(tmp / f"{run.name}.log", "w") as log:
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, __file__, str(n), str(run)], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT_S
        while len(stamps(run)) < n:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{n} tasks did not all start; see {log.name}")
            time.sleep(0.1)
        t_stop = time.time()
        (run / "STOP").write_text("benchmark\n")
        proc.wait(timeout=TIMEOUT_S)
        t_exit = time.time()
    started = stamps(run)
    events = json.loads((run / "engine_events.json").read_text())
    breakdown = radical_breakdown(run, t0, t_stop)
    return {"n": n, "tuned": tuned, "code": proc.returncode, "all_running": max(started) - t0,
            "first_running": min(started) - t0, "engine_start": events["engine_start"] - t0,
            "stop_to_exit": t_exit - t_stop, "breakdown": breakdown,
            "phases": phase_durations(breakdown), "load": os.getloadavg()[0]}


def arm(tuned: bool) -> str:
    return "tuned" if tuned else "untuned"


def print_tasks(results: list[dict]) -> None:
    """Each run's breakdown, then medians per task count and arm, and their ratio."""
    for r in results:
        print(f"\n{r['n']} tasks, RADICAL settings {arm(r['tuned'])} (exit {r['code']}, "
              f"load average {r['load']:.1f}), seconds after launch:")
        print(f"  engine_start event             {r['engine_start']:7.1f}")
        for label, when, ref in r["breakdown"]:
            if ref == "launch":
                print(f"  radical: {label:<22} {when:7.1f}")
        for name, seconds in r["phases"]:
            print(f"  phase: {name:<36} {seconds:6.1f} s")
        print(f"  first task running             {r['first_running']:7.1f}")
        print(f"  EnTK launch → every task running: {r['all_running']:.1f} s")
        print(f"  STOP -> exit                   {r['stop_to_exit']:7.1f}")
    print(f"\n{'tasks':>5} {'arm':>8} {'runs':>4} {'launch->all running s (median)':>31}"
          f" {'STOP->exit s':>12} {'untuned/tuned':>13}")
    for n in sorted({r["n"] for r in results}):
        medians = {}
        for tuned in (True, False):
            rows = [r for r in results if r["n"] == n and r["tuned"] == tuned]
            if not rows:
                continue
            medians[tuned] = statistics.median(r["all_running"] for r in rows)
            stop = statistics.median(r["stop_to_exit"] for r in rows)
            ratio = (f"{medians[False] / medians[True]:13.2f}"
                     if len(medians) == 2 else "")
            print(f"{n:5d} {arm(tuned):>8} {len(rows):4d} {medians[tuned]:31.1f} {stop:12.1f}"
                  f" {ratio}")


def plot_tasks(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for tuned in (True, False):
        rows = [r for r in results if r["tuned"] == tuned]
        if rows:
            ax.plot([r["n"] for r in rows], [r["all_running"] for r in rows], "o",
                    label=f"RADICAL settings {arm(tuned)}")
    ax.set_xlabel("tasks")
    ax.set_ylabel("launch → every task running (s)")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("RADICAL-EnTK start-up, local.localhost")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"figure: {path}")


if __name__ == "__main__":
    os.environ.setdefault("ADIOS2_IP", "127.0.0.1")
    raise SystemExit(child(int(sys.argv[1]), Path(sys.argv[2])))
