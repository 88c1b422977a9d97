"""Agent cycle time by phase (read, load model, encode, cluster, publish) for 80,000 frames.

    python benchmarks/agent_cycle.py [--quick] [--frames 80000] [--cycles 3] [--atoms 504]
                                     [--step-frames 1000] [--new-frames 1000] [--agent-cpus 1]

A run directory is prepared (`workflow.prepare.prepare_run_dir`) and a synthetic BP5 store
written into it through `streams.FrameWriter` (the aggregator's IO), --step-frames frames per
ADIOS step: 28x28 uint8 contact maps (band-diagonal maps of varying width, some with a hairpin
or helix block, 2 % flipped pixels, ~2 % random maps), rmsd, sim/step/segment/structure ids, 28 Cα
positions and --atoms-atom all_positions + velocities (float32; FSD-EY has 504 atoms: ~1 GB
for 80,000 frames, which the agent's window holds in memory; lower --atoms if memory is short).

A CVAE with the paper's architecture (the default `training.cvae`: 4 Conv2D x 64 filters,
strides 1-2-1-1, dense 128, latent 10) is built and, unless --train-frames is 0, trained for
one epoch on 1,000 maps (--quick: untrained), then published with `ml.registry.publish_model`
(in a child process, so that this one's peak RSS is the data plus the agent's).
Then `Agent(ctx).cycle()` runs --cycles times on the real task context (`agent.max_samples` =
--frames, default outlier band [1000, 5000], DBSCAN, n_outliers 500, `resources.agent.cpus`
= --agent-cpus). Before every cycle after the first, --new-frames new frames are appended to
the store, as the aggregators would; before the last of 3 or more cycles a new model version is
published, as the trainer would (the agent keeps the latents of frames it has encoded until the
model changes, so that cycle encodes the whole window again). The phase durations come from the
agent's events.jsonl: read (new steps into the window), load_model, encode (`encoded`: frames
actually encoded), cluster (DBSCAN noise; the first cycle sets eps), publish_catalog, and `other`
= cycle - encode - cluster - publish (window copy, ranking, records). Target: <= 30 s per cycle.

With --ranks N, the first cycle runs instead as the real agent task, once with 1 rank and once
with N (`resources.agent.ranks`, started by the local engine's `mpiexec -n N` command line from
`workflow.prepare.task_spec`), one after the other on the same store and model; it prints each
run's wall time and phases and the ratios 1 rank / N ranks (the ranks share only the encoding).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ADIOS2_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

N_RES = 28


def synthetic_maps(count: int, rng: np.random.Generator) -> np.ndarray:
    """Varied 28x28 contact maps: bands of width 1-5, optional hairpin/helix blocks, noise."""
    index = np.arange(N_RES)
    offsets = np.abs(index[:, None] - index[None, :])
    widths = rng.integers(1, 6, size=count)
    maps = offsets[None] <= widths[:, None, None]
    # a beta hairpin between residues 0-9 (anti-diagonal contacts) in ~30 % of frames
    hairpin = rng.random(count) < 0.3
    anti = (np.add.outer(index, index) >= 8) & (np.add.outer(index, index) <= 10)
    anti &= (index[:, None] < 10) & (index[None, :] < 10)
    maps |= hairpin[:, None, None] & anti[None]
    # a helix block (i, i+3/i+4 contacts) over residues 14-27 in ~40 % of frames
    helix = rng.random(count) < 0.4
    block = ((offsets == 3) | (offsets == 4)) & (index[:, None] >= 14) & (index[None, :] >= 14)
    maps |= helix[:, None, None] & block[None]
    maps ^= rng.random(maps.shape) < 0.02
    odd = rng.random(count) < 0.02
    maps[odd] = rng.random((int(odd.sum()), N_RES, N_RES)) < 0.3
    maps = maps | maps.transpose(0, 2, 1)
    return maps.astype(np.uint8)


def synthetic_batch(count: int, first: int, atoms: int,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    ids = np.arange(first, first + count, dtype=np.int64)
    return {
        "contact_map": synthetic_maps(count, rng),
        "positions": rng.standard_normal((count, N_RES, 3), dtype=np.float32) * 10,
        "rmsd": rng.uniform(1.0, 12.0, size=count).astype(np.float32),
        "sim_id": ids % 16,
        "step": ids * 25_000,
        "segment_id": np.zeros(count, np.int64),
        "structure_id": np.zeros(count, np.int64),
        "time_ps": ids * 50.0,
        "all_positions": rng.standard_normal((count, atoms, 3), dtype=np.float32),
        "velocities": rng.standard_normal((count, atoms, 3), dtype=np.float32),
    }


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0**2


def publish_main(run_root: Path, maps_file: Path, train_frames: int, seed: int) -> int:
    """Build the paper CVAE, train it one epoch on the maps (unless 0), publish it."""
    from ddmd_stream.config import load_config
    from ddmd_stream.ml.base import model_for
    from ddmd_stream.ml.registry import publish_model
    from ddmd_stream.rundir import RunDir

    run = RunDir(run_root)
    config = load_config(run.config_file)
    maps = np.load(maps_file)
    model = model_for(config.training, maps[:1], seed=seed)
    loss = float("nan")
    if train_frames > 0:
        n_val = max(1, len(maps) // 5)
        history = model.fit(maps[:-n_val], maps[-n_val:], epochs=1,
                            batch_size=config.training.batch_size)
        loss = history["val_loss"][-1]
    version = publish_model(run.model_dir, model.save,
                            {"val_loss": loss, "samples": len(maps), "model": "cvae",
                             "input_field": "contact_map"})
    print(f"published CVAE v{version} (1 epoch on {len(maps) if train_frames else 0} maps,"
          f" val loss {loss:.1f})")
    return 0


def publish_in_child(run_root: Path, maps_file: Path, train_frames: int, seed: int) -> None:
    """Train and publish a model in a child process (this one holds only what the agent holds)."""
    started = time.perf_counter()
    publish = subprocess.run([sys.executable, __file__, "--publish", str(run_root),
                              "--maps", str(maps_file), "--train-frames", str(train_frames),
                              "--seed", str(seed)], capture_output=True, text=True)
    if publish.returncode != 0:
        raise SystemExit(f"publishing the model failed:\n{publish.stderr[-3000:]}")
    print(f"{publish.stdout.strip().splitlines()[-1]} in {time.perf_counter() - started:.1f} s",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="20,000 frames, 64 atoms, 3 cycles (~1 min)")
    parser.add_argument("--frames", type=int, help="frames in the store (default 80,000)")
    parser.add_argument("--cycles", type=int, help="agent cycles (default 3)")
    parser.add_argument("--atoms", type=int, help="atoms of all_positions/velocities (504)")
    parser.add_argument("--step-frames", type=int, default=1000, help="frames per ADIOS step")
    parser.add_argument("--new-frames", type=int, default=1000,
                        help="frames appended before each cycle after the first")
    parser.add_argument("--train-frames", type=int,
                        help="maps for the one training epoch before publishing (0: untrained;"
                        " default 1000, --quick 0)")
    parser.add_argument("--agent-cpus", type=int, default=1, help="resources.agent.cpus")
    parser.add_argument("--ranks", type=int,
                        help="compare a first cycle at 1 and at this many MPI ranks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--publish", type=Path, help=argparse.SUPPRESS)  # internal: child
    parser.add_argument("--maps", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.publish:
        return publish_main(args.publish, args.maps, args.train_frames or 0, args.seed)
    frames = args.frames or (20_000 if args.quick else 80_000)
    cycles = args.cycles or 3
    atoms = args.atoms or (64 if args.quick else 504)
    train_frames = args.train_frames if args.train_frames is not None else (
        0 if args.quick else 1000)

    from ddmd_stream.agent import Agent
    from ddmd_stream.config import load_config, parse_config
    from ddmd_stream.events import read_events
    from ddmd_stream.streams import FrameWriter
    from ddmd_stream.task import TaskContext, TaskFile
    from ddmd_stream.workflow.prepare import prepare_run_dir

    rng = np.random.default_rng(args.seed)
    print(f"{frames} frames of 28x28 maps ({atoms}-atom restart coordinates), {cycles} cycles,"
          f" agent cpus {args.agent_cpus}; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ddmd-agentbench-") as tmp:
        base = parse_config({
            "workflow": {"run_dir": str(Path(tmp) / "run"), "engine": "local",
                         "duration_s": 3600},
            "training": {"seed": args.seed},
            "agent": {"max_samples": frames, "seed": args.seed},
            "resources": {"agent": {"cpus": args.agent_cpus}},
        }, "<agent benchmark>", Path(tmp))
        run = prepare_run_dir(base)
        config = load_config(run.config_file)  # as the task sees it
        streams = config.streams

        started = time.perf_counter()
        store = FrameWriter(run.adios_xml, streams.aggregator_io, run.aggregator_store(0))
        written = 0
        train_maps = []
        while written < frames:
            batch = synthetic_batch(min(args.step_frames, frames - written), written, atoms, rng)
            store.write(batch)
            if not train_maps or sum(len(m) for m in train_maps) < train_frames:
                train_maps.append(batch["contact_map"])
            written += len(batch["rmsd"])
        print(f"wrote {written} frames ({store.bytes_written / 1e9:.2f} GB) in "
              f"{time.perf_counter() - started:.1f} s", flush=True)

        maps_file = Path(tmp) / "train-maps.npy"
        np.save(maps_file, np.concatenate(train_maps)[: max(train_frames, 1)])
        del train_maps
        publish_in_child(run.root, maps_file, train_frames, args.seed)
        if args.ranks:
            store.close()
            return compare_ranks(run, config, args.ranks)
        rss_before = peak_rss_gb()

        ctx = TaskContext(TaskFile("agent", 0, run.root, time.time() + 3600), config)
        agent = Agent(ctx)
        walls: list[float] = []
        cpus: list[float] = []
        skipped = 0
        for cycle in range(cycles):
            if cycle > 0 and args.new_frames > 0:
                store.write(synthetic_batch(args.new_frames, written, atoms, rng))
                written += args.new_frames
            if cycle > 1 and cycle == cycles - 1:
                publish_in_child(run.root, maps_file, train_frames, args.seed + 1)
            started, cpu = time.perf_counter(), cpu_seconds()
            ran = agent.cycle()
            walls.append(time.perf_counter() - started)
            cpus.append(cpu_seconds() - cpu)
            skipped += not ran
            print(f"  cycle {cycle + 1}: {walls[-1]:.1f} s, {cpus[-1]:.1f} CPU-s (ran: {ran}),"
                  f" load average {os.getloadavg()[0]:.2f}", flush=True)
        store.close()
        agent.window.close()
        ctx.events.close()
        events = read_events(ctx.dir / "events.jsonl")

    table = phases(events, cycles)
    print()
    print(f"{'cycle':>5} {'frames':>7} {'new':>6} {'read':>6} {'load':>6} {'encode':>7}"
          f" {'encoded':>7} {'cluster':>8} {'publish':>8} {'other':>6} {'total':>7} {'wall':>7}"
          f" {'CPU-s':>6} {'outliers':>8} {'eps':>8}")
    for i, row in enumerate(table):
        print(f"{i + 1:5d} {row['frames']:7d} {row['new']:6d} {row['read']:6.2f}"
              f" {row['load_model']:6.2f} {row['encode']:7.2f} {row['encoded']:7d}"
              f" {row['cluster']:8.2f}"
              f" {row['publish_catalog']:8.2f}"
              f" {row['other']:6.2f} {row['total']:7.2f} {walls[i]:7.2f} {cpus[i]:6.1f}"
              f" {row['outliers']:8d} {row['eps']:8.4f}")
    print()
    print("seconds per phase; total = read + load + cycle span; wall = Agent.cycle() as timed"
          " here; CPU-s = this process's CPU time during it (all threads, 2 cores = 2 CPU-s per"
          " s). The first cycle reads the whole store, loads the model and sets eps.")
    print(f"peak RSS of this process {peak_rss_gb():.2f} GB (before the agent: {rss_before:.2f}"
          f" GB: the synthetic data); target <= 30 s per cycle; load average now "
          f"{os.getloadavg()[0]:.2f}")
    if skipped:
        print(f"error: {skipped} of {cycles} cycles did not run (no usable model or data)")
    return 1 if skipped else 0


def first_cycle_as_task(run, config, ranks: int) -> dict:
    """One agent task process (`once`: one cycle) at `ranks` ranks: wall time and phases."""
    from ddmd_stream.config import save_config
    from ddmd_stream.events import read_events
    from ddmd_stream.task import TaskFile
    from ddmd_stream.workflow.prepare import task_spec

    config = config.model_copy(deep=True)
    config.resources.agent.ranks = ranks
    save_config(config, run.config_file)  # what the task reads
    task_file = run.task_file("agent", 0)
    TaskFile("agent", 0, run.root, time.time() + 3600, [], once=True).save(task_file)
    for path in task_file.parent.glob("events.jsonl"):
        path.unlink()
    run.catalog_file.unlink(missing_ok=True)
    spec = task_spec(config, run, "agent", 0, task_file)
    started = time.perf_counter()
    done = subprocess.run(spec.command_line, cwd=spec.workdir, capture_output=True, text=True,
                          env={**os.environ, **spec.environment})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the {ranks}-rank agent failed:\n{done.stderr[-3000:]}")
    row = phases(read_events(task_file.parent / "events.jsonl"), 1)[0]
    return {**row, "wall": wall}


def compare_ranks(run, config, ranks: int) -> int:
    """A first cycle at 1 and at `ranks` ranks, side by side; prints the ratios."""
    results = {}
    for count in (1, ranks):
        results[count] = row = first_cycle_as_task(run, config, count)
        print(f"ranks {count}: task wall {row['wall']:.1f} s (process start, imports, cycle);"
              f" read {row['read']:.2f} load {row['load_model']:.2f} encode {row['encode']:.2f}"
              f" cluster {row['cluster']:.2f} total {row['total']:.2f} s; {row['outliers']}"
              f" outliers, eps {row['eps']:.4f}; load average {os.getloadavg()[0]:.2f}",
              flush=True)
    one, many = results[1], results[ranks]
    print(f"ratio 1 rank / {ranks} ranks: encode {one['encode'] / many['encode']:.2f},"
          f" first cycle {one['total'] / many['total']:.2f},"
          f" task wall {one['wall'] / many['wall']:.2f}")
    return 0


def phases(events: list[dict], cycles: int) -> list[dict]:
    """Per cycle: durations of read/load_model/encode/cluster/publish_catalog, outliers, eps."""
    rows: list[dict] = []
    current: dict = {}
    for event in events:
        name = event["event"]
        if name == "read":
            current = {"read": event["dur"], "new": int(event.get("new", 0)), "load_model": 0.0,
                       "encode": 0.0, "encoded": 0, "cluster": 0.0, "publish_catalog": 0.0}
        elif name in ("load_model", "encode", "cluster", "publish_catalog"):
            current[name] = event["dur"]
            if name == "encode":
                current["encoded"] = int(event.get("encoded", event.get("frames", 0)))
        elif name == "cycle":
            inner = current["encode"] + current["cluster"] + current["publish_catalog"]
            rows.append({**current, "frames": int(event.get("frames", 0)),
                         "outliers": int(event.get("outliers", 0)),
                         "eps": float(event.get("eps", float("nan"))),
                         "other": event["dur"] - inner,
                         "total": current["read"] + current["load_model"] + event["dur"]})
    return rows[:cycles]


if __name__ == "__main__":
    raise SystemExit(main())
