"""GPU throughput of the pieces issue 11 is about, for FSD-EY on one GPU (CPU runs work too).

    python benchmarks/gpu_throughput.py [--quick] [--platform CUDA] [--packings 1 4 8 16]
                                        [--steps 50000] [--batch-sizes 32 256]
                                        [--encode-maps 80000] [--data-dir ../shared/data/bba]

1. bare OpenMM, one simulation: ns/day.
2. N simulations at once on the GPU (N = --packings), as bare OpenMM and as the streaming
   simulation task (FrameReporter → FrameWriter on BP5, `sim_overhead.Streamer`), each without
   and with NVIDIA MPS (`workflow.mps.MpsDaemon`, skipped when the control program is
   missing): total ns/day and the ratio streaming / bare at the same packing. Every
   simulation is its own process (as in a run); all warm up, then step together.
3. CVAE training samples/s at each --batch-sizes, per Keras backend installed (tensorflow,
   torch), with `train_throughput.measure` in a process per backend (KERAS_BACKEND).
4. Encoding: maps/s for --encode-maps 28×28 maps (the agent's window) per backend.

Targets on one H100: >= 10,000 ns/day in total; streaming >= 97 % of bare; training
>= 20,000 samples/s at batch 256. `--quick` (CPU, a minute or two) only shows that it runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim_overhead import DEFAULT_DATA, Streamer, find_data, ns_per_day
from train_throughput import Setting, build, measure, synthetic

BACKENDS = ("tensorflow", "torch")
ENCODE_BATCH = 1024  # agent.encode_batch_size default
WARMUP_STEPS = 200
READY_TIMEOUT_S = 600.0


def gpu_line() -> str | None:
    """The GPU's name from nvidia-smi, or None when this machine has no NVIDIA GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
    result = subprocess.run(query, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    return lines[0] if result.returncode == 0 and lines else None


# --------------------------------------------------------------------------- simulations


def sim_child(options: dict[str, Any]) -> dict[str, float]:
    """One simulation process: warm up, say ready, wait for go, step, return ns/day."""
    from ddmd_stream.config import SimulationConfig
    from ddmd_stream.md.system import build_simulation, load_pdb, reference_ca_angstrom

    unfolded, folded = Path(options["pdb"]), Path(options["reference"])
    threads = options["threads"] if options["platform"] == "CPU" else None
    config = SimulationConfig(pdb_file=unfolded, reference_pdb=folded,
                              platform=options["platform"], cpu_threads=threads, seed=1)
    simulation, platform = build_simulation(config, load_pdb(unfolded), seed=options["index"])
    streamer = None
    if options["streaming"]:
        folder = Path(options["folder"]) / f"sim-{options['index']}"
        streamer = Streamer(simulation, reference_ca_angstrom(folded), options["report_every"],
                            "bp5", folder)
        simulation.reporters.append(streamer.reporter)
    simulation.step(WARMUP_STEPS)
    Path(options["ready"]).touch()
    while not Path(options["go"]).exists():
        time.sleep(0.01)
    started = time.perf_counter()
    simulation.step(options["steps"])
    seconds = time.perf_counter() - started
    if streamer is not None:
        streamer.close()
    return {"ns_per_day": ns_per_day(options["steps"], seconds, config.timestep_fs),
            "seconds": seconds, "platform": platform}


def run_packing(args: argparse.Namespace, count: int, streaming: bool, tmp: Path) -> float:
    """Total ns/day of `count` simulations stepping at once."""
    unfolded, folded = find_data(args.data_dir)
    folder = Path(tempfile.mkdtemp(prefix=f"pack{count}-", dir=tmp))
    go = folder / "go"
    children = []
    for index in range(count):
        options = {"pdb": str(unfolded), "reference": str(folded), "platform": args.platform,
                   "threads": args.threads, "index": index, "streaming": streaming,
                   "folder": str(folder), "report_every": args.report_every,
                   "steps": args.steps, "ready": str(folder / f"ready-{index}"), "go": str(go)}
        children.append(subprocess.Popen([sys.executable, __file__, "--child", "sim",
                                          json.dumps(options)], stdout=subprocess.PIPE, text=True))
    deadline = time.time() + READY_TIMEOUT_S
    while len(list(folder.glob("ready-*"))) < count:
        if time.time() > deadline or any(c.poll() not in (None, 0) for c in children):
            raise SystemExit(f"error: simulations at packing {count} did not start")
        time.sleep(0.05)
    go.touch()
    results = [json.loads(c.communicate()[0].strip().splitlines()[-1]) for c in children]
    return sum(r["ns_per_day"] for r in results)


@contextmanager
def mps_daemon(folder: Path) -> Iterator[None]:
    """An MPS daemon for the children (they inherit its two variables) while the block runs."""
    from ddmd_stream.rundir import RunDir
    from ddmd_stream.workflow.mps import MpsDaemon, mps_env

    run = RunDir(folder)
    saved = {key: os.environ.get(key) for key in mps_env(run)}
    os.environ.update(mps_env(run))
    try:
        with MpsDaemon(run):
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def simulation_rows(args: argparse.Namespace, tmp: Path) -> None:
    from ddmd_stream.workflow.mps import MPS_CONTROL

    bare = run_packing(args, 1, False, tmp)
    print(f"bare OpenMM, one simulation ({args.platform}): {bare:,.0f} ns/day", flush=True)
    variants = [False]
    if shutil.which(MPS_CONTROL) and gpu_line():
        variants.append(True)
    else:
        print(f"MPS rows skipped: {MPS_CONTROL} or the GPU is missing")
    print(f"{'per GPU':>7} {'MPS':>4} {'bare ns/day':>12} {'streaming ns/day':>17} "
          f"{'streaming/bare':>15} {'vs one bare':>12}")
    for with_mps in variants:
        for count in args.packings:
            with mps_daemon(tmp / f"mps-{count}") if with_mps else nullcontext():
                packed = run_packing(args, count, False, tmp)
                streamed = run_packing(args, count, True, tmp)
            print(f"{count:7d} {'on' if with_mps else 'off':>4} {packed:12,.0f} "
                  f"{streamed:17,.0f} {streamed / packed:15.3f} {streamed / bare:11.2f}x",
                  flush=True)


# --------------------------------------------------------------------------- training


def ml_child(options: dict[str, Any]) -> list[dict[str, Any]]:
    """Training rows per batch size, then encoding of the agent's window (one backend)."""
    import keras

    setting = Setting("cvae", 28, "28x28 map")
    rows = [measure(setting, batch, options["train_steps"]) for batch in options["batches"]]
    maps = synthetic("cvae", 28, options["encode_maps"])
    model = build("cvae", maps)
    model.encode(maps[:ENCODE_BATCH], ENCODE_BATCH)  # trace
    started = time.perf_counter()
    model.encode(maps, ENCODE_BATCH)
    seconds = time.perf_counter() - started
    rows.append({"batch": ENCODE_BATCH, "encode_maps": len(maps), "encode_s": seconds})
    return [{**row, "backend": keras.backend.backend()} for row in rows]


def ml_rows(args: argparse.Namespace) -> None:
    options = {"train_steps": args.train_steps, "batches": args.batch_sizes,
               "encode_maps": args.encode_maps}
    backends = [b for b in BACKENDS if importlib.util.find_spec(b) is not None]
    print(f"\nCVAE (28x28 maps, default hyperparameters); backends installed: {backends}")
    print(f"{'backend':>10} {'batch':>6} {'train samples/s':>16}")
    for backend in backends:
        env = {**os.environ, "KERAS_BACKEND": backend}
        result = subprocess.run([sys.executable, __file__, "--child", "ml", json.dumps(options)],
                                env=env, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"{backend:>10} failed: {result.stderr.strip().splitlines()[-1:]}")
            continue
        rows = json.loads(result.stdout.strip().splitlines()[-1])
        for row in rows[:-1]:
            print(f"{backend:>10} {row['batch']:6d} {row['train_per_s']:16,.0f}", flush=True)
        encode = rows[-1]
        print(f"{backend:>10} encoding {encode['encode_maps']:,} maps: {encode['encode_s']:.2f} s "
              f"({encode['encode_maps'] / encode['encode_s']:,.0f} maps/s)", flush=True)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to see that it runs")
    parser.add_argument("--platform", help="OpenMM platform (default: CUDA with a GPU, else CPU)")
    parser.add_argument("--threads", type=int, default=1, help="CPU platform threads per sim")
    parser.add_argument("--packings", type=int, nargs="+", help="simulations per GPU (1 4 8 16)")
    parser.add_argument("--steps", type=int, help="timed MD steps per sim (50000)")
    parser.add_argument("--report-every", type=int, help="steps between frames (25000 = 50 ps)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--train-steps", type=int, help="timed batches per batch size (20)")
    parser.add_argument("--encode-maps", type=int, help="maps encoded (80000)")
    parser.add_argument("--skip-md", action="store_true", help="only training and encoding")
    parser.add_argument("--skip-ml", action="store_true", help="only the simulations")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help="folder with 1FME-unfolded.pdb and 1FME-folded.pdb")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    args.packings = args.packings or ([1, 2] if quick else [1, 4, 8, 16])
    args.steps = args.steps or (200 if quick else 50_000)
    args.report_every = args.report_every or (50 if quick else 25_000)
    args.train_steps = args.train_steps or (2 if quick else 20)
    args.encode_maps = args.encode_maps or (2_000 if quick else 80_000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        kind, options = args.child
        child = sim_child if kind == "sim" else ml_child
        print(json.dumps(child(json.loads(options))))
        return 0
    gpu = gpu_line()
    args.platform = args.platform or ("CUDA" if gpu else "CPU")
    if gpu:
        print(f"GPU: {gpu}")
    else:
        print(f"no GPU here (no nvidia-smi): CPU figures only, not issue 11's; "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{time.strftime('%Y-%m-%d')}, {args.steps} timed steps per simulation, "
          f"a frame every {args.report_every} steps", flush=True)
    with tempfile.TemporaryDirectory(prefix="ddmd-gpubench-") as tmp:
        if not args.skip_md:
            simulation_rows(args, Path(tmp))
    if not args.skip_ml:
        ml_rows(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
