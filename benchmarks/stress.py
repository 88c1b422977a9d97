"""Stress: many simulations into two aggregators, with trainer and agent, for a while.

    python benchmarks/stress.py [--sims 32] [--aggregators 2] [--duration-s 600]
                                [--engine entk|local] [--run-dir DIR]

Alanine dipeptide on the Reference platform, a frame every 0.1 ps, streaming mode. Prints:

- frames/s stored (over the run, and between the first and last store write);
- per-frame latency from the simulation's put (the frame's `wall_time`) to the end of the store
  step holding it (the aggregator's `write` span: the k-th `write` event of an aggregator is
  the k-th step of its store), p50/p99;
- the aggregators' CPU (their processes and their reader pumps, psutil, sampled every second)
  in cores and as a share of the machine and of the whole run's CPU;
- peak RSS: of the run (all its processes together), of one process, of the aggregators;
- frame accounting per simulation (streamed, stored unique, duplicates, lost), from the
  simulations' ledgers (`ddmd_stream.accounting`), or else their `stream_closed` events;
- last line: `stress: N simulations, F frames stored, lost L`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("ADIOS2_IP", "127.0.0.1")
os.environ.setdefault("RADICAL_DEFAULT_IFACE", "lo")

import numpy as np
import psutil
import yaml

from ddmd_stream.config.defaults import PACKAGE_DATA
from ddmd_stream.events import read_events
from ddmd_stream.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
SST_XML = REPO / "adios_xml" / "sst.xml"
BP5_XML = REPO / "adios_xml" / "bp5.xml"
SAMPLE_S = 1.0
PSS_EVERY = 10  # samples between PSS readings (smaps is slow to read)


def stress_config(sims: int, aggregators: int, duration_s: float, engine: str,
                  run_dir: Path) -> dict:
    return {
        "workflow": {"engine": engine, "duration_s": duration_s, "heartbeat_s": 2,
                     "run_dir": str(run_dir)},
        "simulation": {"num_simulations": sims, "pdb_file": str(
            PACKAGE_DATA / "alanine-dipeptide-c7eq.pdb"), "platform": "Reference",
            "seed": 11, "report_interval_ps": 0.1, "segment_length_ns": 0.01},
        "aggregation": {"num_aggregators": aggregators},
        "training": {"min_samples": 200, "epochs": 2, "batch_size": 64,
                     "cvae": {"conv_filters": [8, 8, 8, 8], "dense_units": 16}},
        "agent": {"min_samples": 200, "n_outliers": 20, "cycle_interval_s": 10},
        "streams": {"adios_xml": str(SST_XML), "open_timeout_s": 300},
    }


@dataclass
class Sampler:
    """psutil samples of a run's processes: CPU seconds (last seen per pid) and RSS peaks."""

    run: RunDir
    cpu: dict[int, float] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    aggregator_pids: set[int] = field(default_factory=set)
    peak_total_rss: int = 0
    peak_process_rss: int = 0
    peak_aggregator_rss: int = 0
    peak_aggregator_pss: int = 0  # shared pages counted once (pumps share the forkserver's)
    samples: int = 0

    def task_pids(self) -> dict[str, int]:
        """task name -> pid of its latest attempt (task_start events; a task's events are
        read again only once its known process has ended, i.e. after a restart)."""
        for path in self.run.tasks_dir.glob("*/events.jsonl"):
            name = path.parent.name
            if name not in self.pids or not psutil.pid_exists(self.pids[name]):
                starts = [e["pid"] for e in read_events(path) if e["event"] == "task_start"]
                if starts:
                    self.pids[name] = starts[-1]
        return self.pids

    def sample(self) -> None:
        total = aggregator_rss = aggregator_pss = 0
        self.samples += 1
        with_pss = self.samples % PSS_EVERY == 0
        for name, pid in self.task_pids().items():
            for process in _with_descendants(pid):
                try:
                    times, rss = process.cpu_times(), process.memory_info().rss
                except psutil.Error:
                    continue
                self.cpu[process.pid] = times.user + times.system
                total += rss
                self.peak_process_rss = max(self.peak_process_rss, rss)
                if name.startswith("aggregator"):
                    self.aggregator_pids.add(process.pid)
                    aggregator_rss += rss
                    aggregator_pss += _pss(process) if with_pss else 0
        self.peak_total_rss = max(self.peak_total_rss, total)
        self.peak_aggregator_rss = max(self.peak_aggregator_rss, aggregator_rss)
        self.peak_aggregator_pss = max(self.peak_aggregator_pss, aggregator_pss)

    @property
    def aggregator_cpu_s(self) -> float:
        return sum(self.cpu[pid] for pid in self.aggregator_pids)

    @property
    def run_cpu_s(self) -> float:
        return sum(self.cpu.values())


def _pss(process: psutil.Process) -> int:
    try:
        return process.memory_full_info().pss
    except psutil.Error:
        return 0


def _with_descendants(pid: int) -> list[psutil.Process]:
    try:
        process = psutil.Process(pid)
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return []


def write_times(events_file: Path) -> list[float]:
    """End time of each store step an aggregator wrote, in store order."""
    return [e["t"] + e["dur"] for e in read_events(events_file) if e["event"] == "write"]


def latencies(run: RunDir) -> tuple[np.ndarray, list[str]]:
    """Seconds from each stored frame's wall_time to the end of its store step's write."""
    from ddmd_stream.streams import StoreReader

    found, notes = [], []
    for index, store in enumerate(run.aggregator_stores()):
        written = write_times(run.task_dir("aggregator", index) / "events.jsonl")
        reader = StoreReader(BP5_XML, "AggregatorOutput", store, variables=["wall_time"])
        steps = reader.read_new()
        reader.close()
        if len(steps) != len(written):
            notes.append(f"{store.name}: {len(steps)} steps but {len(written)} write events "
                         "(paired in order)")
        for batch, done in zip(steps, written, strict=False):
            found.append(done - batch["wall_time"])
    return (np.concatenate(found) if found else np.zeros(0)), notes


def accounting_rows(run: RunDir) -> list[tuple[int, int, int, int, int]]:
    """(sim_id, streamed, stored unique, duplicates, lost) per simulation."""
    from ddmd_stream.accounting import account_run, stored_identities

    rows = account_run(run)
    if rows and any(row.streamed for row in rows):
        return [(r.sim_id, r.streamed, r.stored - r.duplicates, r.duplicates, r.lost)
                for r in rows]
    # No ledgers: the simulations' stream_closed events say what each streamed.
    stored = stored_identities(run)
    streamed: dict[int, int] = {}
    for path in run.tasks_dir.glob("sim-*/events.jsonl"):
        sim_id = int(path.parent.name.split("-")[-1])
        streamed[sim_id] = sum(e["frames"] for e in read_events(path)
                               if e["event"] == "stream_closed")
    out = []
    for sim_id, count in sorted(streamed.items()):
        mine = stored["sim_id"] == sim_id
        ids = set(zip(stored["segment_id"][mine].tolist(), stored["step"][mine].tolist(),
                      strict=True))
        out.append((sim_id, count, len(ids), int(mine.sum()) - len(ids),
                    max(0, count - len(ids))))
    return out


def run_stress(args: argparse.Namespace) -> None:
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="ddmd-stress-")) / "run"
    config = stress_config(args.sims, args.aggregators, args.duration_s, args.engine, run_dir)
    config_file = run_dir.parent / "stress.yaml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(yaml.safe_dump(config))
    print(f"stress: {args.sims} simulations, {args.aggregators} aggregators, "
          f"{args.duration_s:.0f} s on {args.engine}; run {run_dir}", flush=True)
    print(f"load average at start: {os.getloadavg()}, cores: {os.cpu_count()}", flush=True)
    started = time.monotonic()
    sampler = Sampler(RunDir(run_dir))
    with open(run_dir.parent / "launcher.log", "w") as log:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "ddmd_stream.launch", str(config_file)],
            stdout=log, stderr=subprocess.STDOUT)
        while launcher.poll() is None:
            if run_dir.exists():
                sampler.sample()
            time.sleep(SAMPLE_S)
    wall = time.monotonic() - started
    print(f"launcher exit code {launcher.returncode} after {wall:.0f} s "
          f"(log: {run_dir.parent / 'launcher.log'})")
    print(f"load average at end: {os.getloadavg()}")
    report(RunDir(run_dir), sampler, args)


def report(run: RunDir, sampler: Sampler, args: argparse.Namespace) -> None:
    rows = accounting_rows(run)
    stored = sum(row[2] for row in rows)
    lost = sum(row[4] for row in rows)
    writes = sorted(t for i in range(args.aggregators)
                    for t in write_times(run.task_dir("aggregator", i) / "events.jsonl"))
    span = writes[-1] - writes[0] if len(writes) > 1 else float("nan")
    print(f"frames stored: {stored}; {stored / args.duration_s:.1f} frames/s over the run's "
          f"{args.duration_s:.0f} s, {stored / span:.1f} frames/s between first and last "
          f"write ({span:.0f} s)")
    lat, notes = latencies(run)
    for note in notes:
        print(f"note: {note}")
    if len(lat):
        p50, p99 = np.percentile(lat, [50, 99])
        print(f"latency put -> stored: p50 {p50:.3f} s, p99 {p99:.3f} s, max {lat.max():.3f} s "
              f"({len(lat)} frames)")
    cores = sampler.aggregator_cpu_s / args.duration_s
    share = sampler.aggregator_cpu_s / max(sampler.run_cpu_s, 1e-9)
    print(f"aggregator CPU: {sampler.aggregator_cpu_s:.1f} s = {cores:.2f} cores = "
          f"{cores / os.cpu_count():.1%} of the machine, {share:.1%} of the run's CPU "
          f"({sampler.run_cpu_s:.0f} s); {len(sampler.aggregator_pids)} aggregator processes "
          "(with reader pumps)")
    gib = 2.0 ** 30
    print(f"peak RSS: run {sampler.peak_total_rss / gib:.2f} GiB (sum over processes), one "
          f"process {sampler.peak_process_rss / gib:.2f} GiB, aggregators "
          f"{sampler.peak_aggregator_rss / gib:.2f} GiB (PSS "
          f"{sampler.peak_aggregator_pss / gib:.2f} GiB)")
    print(f"{'sim':>5} {'streamed':>9} {'stored':>9} {'dupl.':>6} {'lost':>6}")
    for sim_id, streamed, unique, duplicates, missing in rows:
        print(f"{sim_id:>5} {streamed:>9} {unique:>9} {duplicates:>6} {missing:>6}")
    print(f"stress: {args.sims} simulations, {stored} frames stored, lost {lost}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sims", type=int, default=32)
    parser.add_argument("--aggregators", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--engine", choices=["entk", "local"], default="entk")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="run directory (default: a new temporary one)")
    run_stress(parser.parse_args())


if __name__ == "__main__":
    main()
