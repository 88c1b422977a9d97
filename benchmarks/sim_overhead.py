"""Streaming overhead of a simulation: bare OpenMM vs OpenMM + FrameReporter + FrameWriter.

    python benchmarks/sim_overhead.py [--quick] [--steps 2000] [--report-every 500]
                                      [--transports sst bp5] [--threads 2] [--frames 200]
                                      [--repeats 2]

System: FSD-EY (BBA, 1FME; `../shared/data/bba/1FME-unfolded.pdb`, reference
`1FME-folded.pdb`), amber99sbildn + amber99_obc implicit solvent, HBonds, Langevin 300 K, 2 fs,
OpenMM CPU platform (threads: --threads) unless --platform says otherwise.

One Simulation is built and warmed up; then, on that same context, the same number of steps
runs bare (no reporter) and streaming (FrameReporter → FrameWriter, one frame every
--report-every steps) for each transport, interleaved in chunks of one report interval
(bare, sst, bp5, bare, sst, ...) so that changes of machine load hit every variant alike; wall
and CPU time (this process, all OpenMM threads) are summed per variant:

- sst: the shipped `adios_xml/sst.xml` (loopback); a reader subprocess drains the stream.
- bp5: the shipped `adios_xml/bp5.xml`; frames go into a BP5 file, no reader.
- sst-replay: as sst, through the simulations' `streams.replay.ReplayingWriter` (keeps a copy of
  every frame until an ack; here no aggregator acks, so the copies are never dropped).

Short runs report far more often than the paper (one frame per 50 ps = 25,000 steps), so the
per-frame cost is measured directly and extrapolated: the "frame loop" times --frames
iterations of what OpenMM does at a report (getState with positions + velocities), the
reporter's work (contact map, Kabsch RMSD, copies) and the ADIOS put, without stepping.
Overhead at 50 ps = per-frame cost / (bare wall time of 25,000 steps). Target: <= 0.1 %.
The measured ratio of the real task (its own process, SST, a real aggregator) at 50 ps and
0.5 ps: `benchmarks/sim_task_overhead.py`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ADIOS2_IP", "127.0.0.1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "bba"
XMLS = {"sst": REPO / "adios_xml" / "sst.xml", "bp5": REPO / "adios_xml" / "bp5.xml",
        "sst-replay": REPO / "adios_xml" / "sst.xml"}
IO_NAME = "SimulationOutput"
PAPER_INTERVAL_PS = 50.0

READER = """
import sys
from ddmd_stream.streams import FrameReader
reader = FrameReader(sys.argv[1], sys.argv[2], sys.argv[3], open_timeout_s=120)
frames = 0
while True:
    batch = reader.next(1.0)
    if batch is None:
        if reader.ended:
            break
        continue
    frames += len(batch["step"])
reader.close()
print(frames)
"""


def find_data(data_dir: Path) -> tuple[Path, Path]:
    unfolded, folded = data_dir / "1FME-unfolded.pdb", data_dir / "1FME-folded.pdb"
    for path in (unfolded, folded):
        if not path.is_file():
            raise SystemExit(
                f"error: {path} not found. This benchmark needs the FSD-EY structures of the "
                f"shared data folder (../shared/data/bba beside the repository); "
                f"give another folder with --data-dir"
            )
    return unfolded, folded


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def timed_steps(simulation, steps: int) -> tuple[float, float]:
    """Wall and CPU seconds (this process, all threads) of `steps` MD steps."""
    started, cpu = time.perf_counter(), cpu_seconds()
    simulation.step(steps)
    return time.perf_counter() - started, cpu_seconds() - cpu


class Streamer:
    """A FrameReporter feeding a FrameWriter, the way `sim.StreamingSimulation` does."""

    def __init__(self, simulation, reference, interval: int, transport: str, folder: Path):
        from ddmd_stream.md.geometry import ca_indices
        from ddmd_stream.md.reporter import FrameReporter
        from ddmd_stream.streams import FrameWriter
        from ddmd_stream.streams.replay import ReplayingWriter

        self.path = folder / f"sim-{transport}"
        self.reader = None
        if transport.startswith("sst"):  # the SST writer's open waits for its reader
            self.reader = subprocess.Popen(
                [sys.executable, "-c", READER, str(XMLS[transport]), IO_NAME, str(self.path)],
                stdout=subprocess.PIPE, text=True, start_new_session=True,
            )
        kind = ReplayingWriter if transport.endswith("-replay") else FrameWriter
        self.writer = kind(XMLS[transport], IO_NAME, self.path, open_timeout_s=120)
        self.reporter = FrameReporter(interval, self.send, ca_indices(simulation.topology),
                                      reference, positions="ca", velocities=True)

    def send(self, frame) -> None:
        self.writer.write({name: np.asarray(value)[None] for name, value in frame.items()})

    def close(self) -> int | None:
        """Close the stream; the frames the SST reader received (None for BP5)."""
        self.writer.close()
        if self.reader is None:
            return None
        out, _ = self.reader.communicate(timeout=120)
        return int(out.strip().splitlines()[-1]) if out.strip() else -1


def frame_loop(simulation, streamer: Streamer, frames: int) -> dict[str, float]:
    """ms per frame of getState, reporter work and put, without stepping in between."""
    context = simulation.context
    get_state = report = 0.0
    put_before = streamer.writer.put_seconds
    for _ in range(frames):
        started = time.perf_counter()
        state = context.getState(getPositions=True, getVelocities=True, enforcePeriodicBox=False)
        middle = time.perf_counter()
        streamer.reporter.report(simulation, state)
        get_state += middle - started
        report += time.perf_counter() - middle
    put = streamer.writer.put_seconds - put_before
    reporter = report - put  # report() includes the sink (the put)
    return {"getstate_ms": 1e3 * get_state / frames, "reporter_ms": 1e3 * reporter / frames,
            "put_ms": 1e3 * put / frames, "total_ms": 1e3 * (get_state + report) / frames}


def ns_per_day(steps: int, seconds: float, timestep_fs: float) -> float:
    return steps * timestep_fs * 1e-6 / seconds * 86400.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and frames (~1 min)")
    parser.add_argument("--steps", type=int, help="MD steps per timed run (default 2000)")
    parser.add_argument("--report-every", type=int, default=500, help="steps between frames")
    parser.add_argument("--frames", type=int, help="frame-loop iterations (default 200)")
    parser.add_argument("--repeats", type=int,
                        help="bare/streaming alternations, medians reported (2; --quick 1)")
    parser.add_argument("--transports", nargs="+", choices=sorted(XMLS), default=["sst", "bp5"])
    parser.add_argument("--platform", default="CPU", help="OpenMM platform (CPU, CUDA, ...)")
    parser.add_argument("--threads", type=int, default=2, help="CPU platform threads")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help="folder with 1FME-unfolded.pdb and 1FME-folded.pdb")
    args = parser.parse_args(argv)
    steps = args.steps or (1000 if args.quick else 2000)
    frames = args.frames or (50 if args.quick else 200)
    repeats = args.repeats or (1 if args.quick else 2)

    from ddmd_stream.config import SimulationConfig
    from ddmd_stream.md.system import build_simulation, load_pdb, reference_ca_angstrom

    unfolded, folded = find_data(args.data_dir)
    config = SimulationConfig(pdb_file=unfolded, reference_pdb=folded, platform=args.platform,
                              cpu_threads=args.threads if args.platform == "CPU" else None,
                              seed=1)
    simulation, platform = build_simulation(config, load_pdb(unfolded), seed=1)
    reference = reference_ca_angstrom(folded)
    n_atoms = simulation.topology.getNumAtoms()
    print(f"FSD-EY: {n_atoms} atoms, platform {platform}"
          f"{f' ({args.threads} threads)' if platform == 'CPU' else ''}, {steps} steps per run,"
          f" a frame every {args.report_every} steps, load average {os.getloadavg()[0]:.2f}")
    simulation.step(200)  # warm-up (kernels, neighbour structures)

    chunk = args.report_every
    rounds = max(1, steps // chunk)
    steps = rounds * chunk
    runs = ["bare", *args.transports]
    wall = dict.fromkeys(runs, 0.0)
    cpu = dict.fromkeys(runs, 0.0)
    components: dict[str, list[dict[str, float]]] = {t: [] for t in args.transports}
    with tempfile.TemporaryDirectory(prefix="ddmd-simbench-") as tmp:
        for repeat in range(repeats):
            streamers = {t: Streamer(simulation, reference, chunk, t, Path(tmp) / f"r{repeat}")
                         for t in args.transports}
            try:
                # interleaved: bare, sst, bp5, bare, ... one report interval each, so that a
                # change of machine load hits every variant alike
                for _ in range(rounds):
                    for run in runs:
                        reporter = streamers[run].reporter if run != "bare" else None
                        if reporter is not None:
                            simulation.reporters.append(reporter)
                        try:
                            seconds, cpu_s = timed_steps(simulation, chunk)
                        finally:
                            if reporter is not None:
                                simulation.reporters.remove(reporter)
                        wall[run] += seconds
                        cpu[run] += cpu_s
                for transport, streamer in streamers.items():
                    components[transport].append(frame_loop(simulation, streamer, frames))
            finally:
                for transport, streamer in streamers.items():
                    sent = streamer.reporter.count
                    got = streamer.close()
                    if got is not None and got != sent:
                        print(f"warning: {transport} reader received {got} of {sent} frames")

    timestep = config.timestep_fs
    total_steps = steps * repeats
    bare_s = wall["bare"] / repeats
    steps_50ps = round(PAPER_INTERVAL_PS * 1000.0 / timestep)
    seconds_50ps = bare_s / steps * steps_50ps
    print()
    print(f"{'run':<6} {'wall s':>8} {'ns/day':>8} {'ratio':>7} {'CPU s':>8} {'CPU ratio':>9}"
          f" {'frames':>6}")
    for run in runs:
        frames_sent = 0 if run == "bare" else total_steps // chunk
        print(f"{run:<6} {wall[run]:8.2f} {ns_per_day(total_steps, wall[run], timestep):8.2f}"
              f" {wall[run] / wall['bare']:7.4f} {cpu[run]:8.2f} {cpu[run] / cpu['bare']:9.4f}"
              f" {frames_sent:6d}")
    print()
    print(f"per-frame streaming cost (frame loop, {frames} frames, median over repeats), and the")
    print(f"overhead at one frame per {PAPER_INTERVAL_PS:g} ps = {steps_50ps} steps "
          f"= {seconds_50ps:.1f} s of bare MD here:")
    print(f"{'transport':<10} {'getState':>9} {'reporter':>9} {'put':>9} {'total ms':>9}"
          f" {'overhead @50ps':>15}")
    for transport in args.transports:
        parts = {key: statistics.median(c[key] for c in components[transport])
                 for key in components[transport][0]}
        overhead = parts["total_ms"] / 1e3 / seconds_50ps
        print(f"{transport:<10} {parts['getstate_ms']:9.3f} {parts['reporter_ms']:9.3f} "
              f"{parts['put_ms']:9.3f} {parts['total_ms']:9.3f} {100 * overhead:14.5f}%")
    print()
    print(f"wall/CPU s: sums over {repeats} x {rounds} interleaved chunks of {chunk} steps per"
          f" variant ({total_steps} steps each; CPU = this process, all threads; the SST"
          f" reader's CPU is not included); ratio = variant / bare. A frame every {chunk} steps"
          f" ({chunk * timestep / 1000:g} ps) is {steps_50ps / chunk:g}x the paper's frame rate.")
    print(f"target: overhead <= 0.1 % at {PAPER_INTERVAL_PS:g} ps; load average now "
          f"{os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
