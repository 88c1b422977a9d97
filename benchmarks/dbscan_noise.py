"""DBSCAN noise the agent's way (one k-nearest-neighbour search) vs a scikit-learn DBSCAN run.

    python benchmarks/dbscan_noise.py [--frames 80000] [--dim 10] [--pairs 3] [--threads 1]

Latents: --frames points in --dim dimensions, five Gaussian blobs of different widths, 3 % of
the points in wider clouds around them (seeded). The detector's first cycle
(`detect_adaptive`, from the default eps 0.2) sets eps. Then, at that eps, alternating for
--pairs pairs, two comparisons of
`sklearn.cluster.DBSCAN(eps, min_samples=10).fit` (brute force, as the agent ran it before: one
such run per eps tried, plus a k-distance pass for the scores) with `DBSCANDetector.detect`:
a first cycle (the detector searches all 10 nearest neighbours) and a steady cycle (the window
moved on by --new frames; the detector saw the window before, untimed, and brings its
neighbours up to date). Prints seconds per run, the ratio DBSCAN / detector
(min/median/max) and whether the two noise sets are identical. Threads: BLAS
and scikit-learn limited to --threads (the agent's `resources.agent.cpus`, default 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from sklearn.cluster import DBSCAN
from threadpoolctl import threadpool_limits

from ddmd_stream.detectors import DBSCANDetector

MIN_SAMPLES = 10


def latents(frames: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-4, 4, size=(5, dim))
    widths = np.array([0.2, 0.3, 0.4, 0.5, 0.7])
    blob = rng.integers(0, 5, frames)
    x = centres[blob] + widths[blob, None] * rng.normal(size=(frames, dim))
    halo = rng.random(frames) < 0.03  # a wider cloud around each centre
    x[halo] = centres[blob[halo]] + 1.5 * rng.normal(size=(int(halo.sum()), dim))
    return x


def timed(run) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    noise = run()
    return time.perf_counter() - start, noise


def sklearn_noise(x: np.ndarray, eps: float, threads: int) -> np.ndarray:
    model = DBSCAN(eps=eps, min_samples=MIN_SAMPLES, algorithm="brute", n_jobs=threads)
    return np.flatnonzero(model.fit(x).labels_ == -1)


def detector_noise(x: np.ndarray, eps: float, threads: int, seen: np.ndarray | None) -> tuple:
    """(seconds, noise) of one detection at `eps`; after one on `seen` (untimed) if given."""
    detector = DBSCANDetector(eps=eps, min_samples=MIN_SAMPLES, n_jobs=threads)
    if seen is not None:
        detector.detect(seen)
    return timed(lambda: detector.detect(x).indices)


def compare(name: str, x: np.ndarray, eps: float, pairs: int, threads: int,
            seen: np.ndarray | None = None) -> bool:
    """Alternating pairs: scikit-learn DBSCAN vs the detector on `x`; prints the ratio."""
    sklearn_s, detector_s, same = [], [], []
    for pair in range(pairs):
        noise = {}
        for what in ("dbscan", "detector") if pair % 2 == 0 else ("detector", "dbscan"):
            if what == "dbscan":
                seconds, noise[what] = timed(lambda: sklearn_noise(x, eps, threads))
                sklearn_s.append(seconds)
            else:
                seconds, noise[what] = detector_noise(x, eps, threads, seen)
                detector_s.append(seconds)
        same.append(np.array_equal(noise["dbscan"], noise["detector"]))
        print(f"  {name} pair {pair}: DBSCAN {sklearn_s[-1]:.2f} s, detector {detector_s[-1]:.2f}"
              f" s, {len(noise['dbscan'])} noise points, identical: {same[-1]}", flush=True)
    ratios = [a / b for a, b in zip(sklearn_s, detector_s, strict=True)]
    print(f"{name}: DBSCAN / detector at eps {eps:.4g}: min {min(ratios):.2f}, median "
          f"{statistics.median(ratios):.2f}, max {max(ratios):.2f}; noise identical in "
          f"{sum(same)} of {len(same)} pairs", flush=True)
    return all(same)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=80_000)
    parser.add_argument("--new", type=int, default=1000, help="frames a steady cycle adds")
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    stream = latents(args.frames + args.new, args.dim)
    first, steady = stream[: args.frames], stream[args.new :]
    print(f"{args.frames} latents x {args.dim}, {args.new} new per steady cycle, min_samples "
          f"{MIN_SAMPLES}, {args.threads} thread(s); {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    with threadpool_limits(limits=args.threads):
        detector = DBSCANDetector(eps=0.2, min_samples=MIN_SAMPLES, n_jobs=args.threads)
        seconds, detection = timed(lambda: detector.detect_adaptive(first))
        eps = detector.eps
        print(f"first cycle (detect_adaptive from eps 0.2): {seconds:.2f} s, eps {eps:.4g}, "
              f"{len(detection)} outliers (band {detector.band})", flush=True)
        ok = compare("first cycle", first, eps, args.pairs, args.threads)
        ok &= compare("steady cycle", steady, eps, args.pairs, args.threads, seen=first)
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
