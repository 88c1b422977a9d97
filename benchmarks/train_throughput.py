"""Training and encoding throughput (samples/s) of the CVAE and the 3dAAE, and trainer peak RSS.

    python benchmarks/train_throughput.py [--model cvae|aae|all] [--steps 5]
                                          [--batch-sizes 32 256] [--no-rss]

Settings (default hyperparameters = the paper's / DeepDriveMD's):
- cvae: 28×28 uint8 contact maps (FSD-EY size);
- aae: Cα clouds of 28 points (FSD-EY) and of 300 points (a 300-residue protein), float32 Å.
Synthetic inputs. For each batch size: one untimed `fit` (graph tracing), then a timed `fit`
over `steps` batches (incl. input preparation, as in the trainer) and a timed `encode` over
the same samples with that batch size (as in the agent). Samples per wall-clock second, and per
CPU-second of this process (all its threads; steadier than wall time on a shared machine).

Peak RSS (`--no-rss` skips it): in a fresh process, what a trainer round holds for a full
80,000-sample window: the ring buffer, `latest()`, the train/validation split, a few training
batches and an evaluation of the validation part. For the CVAE: 28×28 uint8 maps; for the
3dAAE: 300-point float32 clouds.

Runs on whatever device TensorFlow sees (CPU here; on a GPU machine, the GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WINDOW = 80_000


@dataclass(frozen=True)
class Setting:
    model: str  # training.model
    size: int  # residues: map side or points
    label: str


SETTINGS = [
    Setting("cvae", 28, "28x28 map"),
    Setting("aae", 28, "28 points"),
    Setting("aae", 300, "300 points"),
]


def synthetic(model: str, size: int, count: int, seed: int = 0) -> np.ndarray:
    """Random band-ish contact maps (uint8) or random-walk Cα clouds (float32, Å)."""
    rng = np.random.default_rng(seed)
    if model == "cvae":
        offsets = np.abs(np.subtract.outer(np.arange(size), np.arange(size)))
        widths = rng.integers(1, 5, size=count)
        return (offsets[None] <= widths[:, None, None]).astype(np.uint8)
    steps = rng.normal(scale=2.2, size=(count, size, 3)).astype(np.float32)
    return np.cumsum(steps, axis=1, dtype=np.float32)


def build(model: str, sample: np.ndarray) -> Any:
    from ddmd_stream.config import TrainingConfig
    from ddmd_stream.ml.base import model_for

    return model_for(TrainingConfig(model=model), sample[:1], seed=0)


def measure(setting: Setting, batch_size: int, steps: int) -> dict[str, Any]:
    """Training and encoding samples/s for one setting and batch size."""
    count = batch_size * steps
    data = synthetic(setting.model, setting.size, count)
    model = build(setting.model, data)
    model.fit(data[:batch_size], None, epochs=1, batch_size=batch_size)  # trace the step
    model.encode(data[:batch_size], batch_size)
    started, cpu = time.perf_counter(), time.process_time()
    model.fit(data, None, epochs=1, batch_size=batch_size)
    train_s, train_cpu = time.perf_counter() - started, time.process_time() - cpu
    started, cpu = time.perf_counter(), time.process_time()
    model.encode(data, batch_size)
    encode_s, encode_cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "model": setting.model, "input": setting.label, "batch": batch_size, "samples": count,
        "train_per_s": count / train_s, "encode_per_s": count / encode_s,
        "train_per_cpu_s": count / train_cpu, "encode_per_cpu_s": count / encode_cpu,
    }


def rss_child(model: str, size: int, window: int, batch_size: int, steps: int) -> dict[str, Any]:
    """Peak RSS of a trainer round over a full window (run in a fresh process)."""
    from ddmd_stream.ml.data import RingBuffer
    from ddmd_stream.train import peak_rss_mb, split_train_val

    sample = synthetic(model, size, 1)
    net = build(model, sample)
    baseline = peak_rss_mb()
    ring = RingBuffer(window)
    chunk = 4000  # one aggregator step
    for start in range(0, window, chunk):
        ring.add({"x": synthetic(model, size, min(chunk, window - start), seed=start)})
    data = ring.latest()["x"]
    train_idx, val_idx = split_train_val(np.zeros(len(data)), np.arange(len(data)), 20, 0.2)
    train, val = data[train_idx], data[val_idx]
    net.fit(train[: batch_size * steps], val[:batch_size], epochs=1, batch_size=batch_size)
    net.evaluate(val, batch_size=256)
    return {
        "model": model, "input": f"{size}", "window": window, "dtype": str(data.dtype),
        "window_mb": data.nbytes / 2**20, "baseline_rss_mb": baseline,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_rss(model: str, size: int, window: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--rss-child", model, str(size), str(window)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def device() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    load = os.getloadavg()[0]
    if gpus:
        return f"GPU x{len(gpus)}"
    return f"CPU ({os.cpu_count()} cores, load average {load:.1f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["cvae", "aae", "all"], default="all")
    parser.add_argument("--steps", type=int, default=5, help="timed batches per setting")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--window", type=int, default=WINDOW, help="samples for the RSS check")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS check")
    parser.add_argument("--rss-child", nargs=3, metavar=("MODEL", "SIZE", "WINDOW"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        model, size, window = args.rss_child
        print(json.dumps(rss_child(model, int(size), int(window), 32, 3)))
        return 0

    models = ["cvae", "aae"] if args.model == "all" else [args.model]
    print(f"device: {device()}")
    print(f"{'model':6} {'input':11} {'batch':>5} {'train samples/s':>16} {'encode samples/s':>17}"
          f" {'train /CPU-s':>13} {'encode /CPU-s':>14}")
    for setting in (s for s in SETTINGS if s.model in models):
        for batch_size in args.batch_sizes:
            row = measure(setting, batch_size, args.steps)
            print(f"{row['model']:6} {row['input']:11} {row['batch']:5d} "
                  f"{row['train_per_s']:16.1f} {row['encode_per_s']:17.1f} "
                  f"{row['train_per_cpu_s']:13.1f} {row['encode_per_cpu_s']:14.1f}", flush=True)
    if not args.no_rss:
        rss_sizes = {"cvae": 28, "aae": 300}
        for model in models:
            row = run_rss(model, rss_sizes[model], args.window)
            print(f"peak RSS, {model} trainer round, {row['window']} x {row['input']} "
                  f"{row['dtype']} window ({row['window_mb']:.0f} MB): "
                  f"{row['peak_rss_mb']:.0f} MB (after imports + model: "
                  f"{row['baseline_rss_mb']:.0f} MB)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
