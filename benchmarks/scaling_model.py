"""Scaling model: how many simulations one aggregator, one trainer and one agent keep up with,
and what the streaming workflow needs at 120, 1,000 and 6,000 GPUs (6 GPUs per node).

    python benchmarks/scaling_model.py [--preset summit|here] [--sim-ns-per-day X]
        [--report-interval-ps 50] [--segment-ns 10] [--frame-bytes B | --residues 28 --atoms 504]
        [--aggregator-fps F] [--bp5-mbps M] [--train-samples-per-s S] [--epochs 10]
        [--agent-cycle-s T] [--agent-window 80000] [--gpus 120 1000 6000]

Every rate is per frame and comes from a measurement (benchmarks/RESULTS.md) or an option; the
presets only choose defaults (see PRESETS and docs/scaling.md for where each number comes from).

Per simulation: f = frames/s = ns/day x 1000 / 86,400 / report interval (ps); B = bytes/frame
(contact map r x r uint8 + r Cα x 3 float32 + all atoms x 3 float32 twice (restart positions and
velocities) + ~40 B of scalars). A component keeps up with N simulations when:
- aggregator: N f <= min(its frames/s, BP5 bandwidth / B)    (it polls and stores every frame)
              and N <= --max-fan-in (streams per aggregator: 16, the most measured)
- trainer:    N f x epochs <= its training samples/s          (every frame is in the window for
              at least one round: a round over W samples takes epochs W / S seconds, in which
              N f epochs W / S new frames arrive; that must be <= W, whatever W is)
- agent:      N f x cycle(W) <= W                               (every frame is examined by at
              least one cycle over the newest W frames)
and, independently of N, a catalog is fresher than one segment when cycle(W) <= segment time.
At G GPUs (G/6 nodes): one simulation per GPU except one GPU for the trainer and one for the
agent; aggregators take one CPU core each (Summit: 42 cores per node, 6 of them driving the
simulations). The first bottleneck is the single-instance component (trainer or agent) whose
keep-up limit is smallest; aggregators scale by `aggregation.num_aggregators`.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

GPUS_PER_NODE = 6
CORES_PER_NODE = 42

# Defaults of each preset (sources in docs/scaling.md; measurements in benchmarks/RESULTS.md).
# "summit": simulation and training rates of a V100 from the paper / issue 11, the agent's
# GPU encode + CPU DBSCAN estimated from the measured DBSCAN time, the aggregator as measured
# here per CPU core. "here": everything as measured on the 2-core development VM (CPU only).
PRESETS: dict[str, dict[str, float]] = {
    "summit": {
        "sim_ns_per_day": 1500.0,  # paper: FSD-EY, OpenMM, one V100
        "aggregator_fps": 3000.0,  # measured: frames per aggregator CPU-second (BP5 writes incl.)
        "bp5_mbps": 39.0,  # measured lower bound: 3,000 frames/s x 13 KB written by one core
        "train_samples_per_s": 4000.0,  # paper: CVAE, 28x28 maps, one V100
        "agent_cycle_s": 15.0,  # estimate: encode 80,000 maps on a GPU (<1 s) + DBSCAN 11 s
    },
    "here": {
        "sim_ns_per_day": 40.0,  # measured: FSD-EY, OpenMM CPU, 2 threads (sim_overhead.py)
        "aggregator_fps": 3000.0,  # measured (aggregator_throughput.py), per CPU-second
        "bp5_mbps": 39.0,  # measured lower bound (as above)
        "train_samples_per_s": 247.0,  # measured (train_throughput.py, paper CVAE, batch 32)
        "agent_cycle_s": 29.2,  # measured after a new model (11.8 s under the same one)
    },
}


@dataclass(frozen=True)
class Rates:
    sim_ns_per_day: float
    report_interval_ps: float
    segment_ns: float
    frame_bytes: float
    aggregator_fps: float
    bp5_mbps: float
    train_samples_per_s: float
    epochs: int
    agent_cycle_s: float
    agent_window: int
    max_fan_in: int

    @property
    def frames_per_s(self) -> float:
        """Frames one simulation streams per second."""
        return self.sim_ns_per_day * 1000.0 / 86400.0 / self.report_interval_ps

    @property
    def segment_s(self) -> float:
        return self.segment_ns / self.sim_ns_per_day * 86400.0

    @property
    def aggregator_capacity(self) -> float:
        """Frames/s one aggregator stores: its own rate or the store bandwidth, the lower."""
        return min(self.aggregator_fps, self.bp5_mbps * 1e6 / self.frame_bytes)

    def sims_per_aggregator(self) -> float:
        """By frame rate, but at most the largest fan-in measured (streams per aggregator)."""
        return min(self.aggregator_capacity / self.frames_per_s, self.max_fan_in)

    def sims_per_trainer(self) -> float:
        return self.train_samples_per_s / (self.epochs * self.frames_per_s)

    def sims_per_agent(self) -> float:
        return self.agent_window / (self.frames_per_s * self.agent_cycle_s)


def frame_bytes(residues: int, atoms: int) -> int:
    """Bytes of one streamed frame (contact map, Cα positions, restart positions + velocities)."""
    return residues * residues + residues * 3 * 4 + 2 * atoms * 3 * 4 + 40


def layout(rates: Rates, gpus: int, sims_per_gpu: int = 1) -> dict[str, float]:
    nodes = math.ceil(gpus / GPUS_PER_NODE)
    sims = (gpus - 2) * sims_per_gpu  # one GPU for the trainer, one for the agent
    aggregators = math.ceil(sims / rates.sims_per_aggregator())
    spare_cores = nodes * (CORES_PER_NODE - GPUS_PER_NODE)
    return {
        "gpus": gpus, "nodes": nodes, "sims": sims, "frames_per_s": sims * rates.frames_per_s,
        "mb_per_s": sims * rates.frames_per_s * rates.frame_bytes / 1e6,
        "aggregators": aggregators, "aggregator_cores_share": aggregators / spare_cores,
        "trainer_load": sims / rates.sims_per_trainer(),
        "agent_load": sims / rates.sims_per_agent(),
        "catalog_reads_per_s": sims / rates.segment_s,
    }


def first_bottleneck(rates: Rates) -> tuple[str, float]:
    limits = {"trainer": rates.sims_per_trainer(), "agent": rates.sims_per_agent()}
    name = min(limits, key=limits.get)
    return name, limits[name]


def remedy(name: str, rates: Rates, sims: int) -> str:
    """The configuration that keeps component `name` ahead of `sims` simulations."""
    if name == "trainer":
        epochs = max(1, math.floor(rates.train_samples_per_s / (sims * rates.frames_per_s)))
        interval = rates.report_interval_ps * sims / rates.sims_per_trainer()
        if rates.train_samples_per_s / (sims * rates.frames_per_s) >= 1:
            return (f"trainer: training.epochs: {epochs} (from {rates.epochs}), or a faster "
                    "trainer (bigger training.batch_size)")
        return (f"trainer: simulation.report_interval_ps: {interval:.0f} (fewer frames) "
                "and training.epochs: 1")
    interval = rates.report_interval_ps * sims / rates.sims_per_agent()
    return (f"agent: simulation.report_interval_ps: {interval:.0f} (fewer frames), or accept "
            "that each cycle sees only the newest agent.max_samples frames")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), default="summit")
    parser.add_argument("--sim-ns-per-day", type=float, help="one simulation's speed")
    parser.add_argument("--report-interval-ps", type=float, default=50.0)
    parser.add_argument("--segment-ns", type=float, default=10.0)
    parser.add_argument("--residues", type=int, default=28, help="FSD-EY: 28")
    parser.add_argument("--atoms", type=int, default=504, help="FSD-EY: 504")
    parser.add_argument("--frame-bytes", type=float, help="override residues/atoms")
    parser.add_argument("--aggregator-fps", type=float, help="frames/s one aggregator stores")
    parser.add_argument("--bp5-mbps", type=float, help="store write bandwidth (MB/s)")
    parser.add_argument("--train-samples-per-s", type=float, help="trainer samples/s")
    parser.add_argument("--epochs", type=int, default=10, help="training.epochs per round")
    parser.add_argument("--agent-cycle-s", type=float, help="agent cycle over the window (s)")
    parser.add_argument("--agent-window", type=int, default=80000, help="agent.max_samples")
    parser.add_argument("--max-fan-in", type=int, default=16,
                        help="most simulations per aggregator (largest fan-in measured: 16)")
    parser.add_argument("--gpus", type=int, nargs="+", default=[120, 1000, 6000])
    parser.add_argument("--sims-per-gpu", type=int, default=1,
                        help="resources.simulations_per_gpu (with MPS); --sim-ns-per-day is then "
                        "one simulation's speed at that packing")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]

    def pick(name: str) -> float:
        value = getattr(args, name)
        return preset[name] if value is None else value

    rates = Rates(pick("sim_ns_per_day"), args.report_interval_ps, args.segment_ns,
                  args.frame_bytes or frame_bytes(args.residues, args.atoms),
                  pick("aggregator_fps"), pick("bp5_mbps"), pick("train_samples_per_s"),
                  args.epochs, pick("agent_cycle_s"), args.agent_window, args.max_fan_in)
    print(f"preset {args.preset}: sim {rates.sim_ns_per_day:g} ns/day, one frame per "
          f"{rates.report_interval_ps:g} ps -> {rates.frames_per_s:.4f} frames/s per simulation; "
          f"{rates.frame_bytes / 1e3:.1f} kB/frame; segment {rates.segment_ns:g} ns = "
          f"{rates.segment_s:.0f} s")
    print(f"aggregator {rates.aggregator_fps:g} frames/s, BP5 {rates.bp5_mbps:g} MB/s -> "
          f"{rates.aggregator_capacity:.0f} frames/s; trainer {rates.train_samples_per_s:g} "
          f"samples/s x {rates.epochs} epochs; agent {rates.agent_cycle_s:g} s per cycle over "
          f"{rates.agent_window} frames")
    print("\nsimulations one instance keeps up with:")
    by_rate = rates.aggregator_capacity / rates.frames_per_s
    print(f"  {'aggregator':10s} {rates.sims_per_aggregator():12,.0f}  (by frame rate "
          f"{by_rate:,.0f}; at most --max-fan-in {rates.max_fan_in} streams)")
    for name, value in (("trainer", rates.sims_per_trainer()), ("agent", rates.sims_per_agent())):
        print(f"  {name:10s} {value:12,.0f}")
    fresh = "yes" if rates.agent_cycle_s <= rates.segment_s else "NO"
    print(f"  agent cycle shorter than a segment (catalog fresh every segment): {fresh}")
    print(f"\n{'GPUs':>6s} {'nodes':>6s} {'sims':>6s} {'frames/s':>9s} {'MB/s':>7s} "
          f"{'aggregators':>11s} {'agg cores':>9s} {'trainer':>8s} {'agent':>7s} "
          f"{'catalog reads/s':>15s}")
    for gpus in args.gpus:
        row = layout(rates, gpus, args.sims_per_gpu)
        print(f"{gpus:6d} {row['nodes']:6d} {row['sims']:6d} {row['frames_per_s']:9.1f} "
              f"{row['mb_per_s']:7.2f} {row['aggregators']:11d} "
              f"{100 * row['aggregator_cores_share']:8.2f}% {100 * row['trainer_load']:7.0f}% "
              f"{100 * row['agent_load']:6.0f}% {row['catalog_reads_per_s']:15.2f}")
    name, limit = first_bottleneck(rates)
    print("(trainer, agent: share of one instance's capacity; over 100 % it falls behind)")
    print(f"\nfirst bottleneck: the {name}, beyond {limit:,.0f} simulations "
          f"(~{limit / args.sims_per_gpu + 2:,.0f} GPUs); aggregators scale by count")
    for gpus in args.gpus:
        row = layout(rates, gpus, args.sims_per_gpu)
        lines = [f"aggregation.num_aggregators: {row['aggregators']}"]
        lines += [remedy(role, rates, row["sims"]) for role in ("trainer", "agent")
                  if row[f"{role}_load"] > 1.0]
        print(f"  {gpus:5d} GPUs: " + "; ".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
