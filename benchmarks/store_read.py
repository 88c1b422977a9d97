"""Reading a BP store with `StoreReader`: every variable vs. only `contact_map` (the trainer's).

    python benchmarks/store_read.py [--frames 4000] [--step-frames 100] [--repeats 5] [--dir D]

Builds, with `FrameWriter` over BP5, a store of FS-peptide-sized frames (the fields and shapes
of `ddmd_stream.frames.frame_schema`, restart coordinates and velocities included), then reads
it whole with a fresh `StoreReader`, alternating "all variables" and "contact_map only". Per
read it counts the bytes of the returned arrays and the process's /proc/self/io counters
(`read_bytes`: from the disk, the store's pages are evicted from the page cache first;
`rchar`: bytes the read calls returned, cached or not), and prints means per frame, frames/s
and the gain of reading only contact_map (all/contact_map for bytes, the inverse for frames/s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ddmd_stream.frames import CONTACT_MAP, Schema, frame_schema
from ddmd_stream.streams import Batch, FrameWriter, StoreReader

REPO = Path(__file__).resolve().parent.parent
XML = REPO / "adios_xml" / "bp5.xml"
IO_NAME = "AggregatorOutput"
# frame_schema(n_atoms, n_selected (Cα), contact-map size (Cα), velocities): FS peptide
FS_PEPTIDE = (266, 21, 21, True)


def random_batch(schema: Schema, frames: int, rng: np.random.Generator) -> Batch:
    """`frames` frames of random values with the dtypes and shapes of `schema`."""
    batch = {}
    for name, (dtype, shape) in schema.items():
        values = rng.random((frames, *shape)) * 10
        batch[name] = (values > 5 if dtype == np.uint8 else values).astype(dtype)
    return batch


def build_store(path: Path, frames: int, step_frames: int) -> int:
    """Write `frames` frames in steps of `step_frames`; returns the bytes written."""
    rng = np.random.default_rng(0)
    schema = frame_schema(*FS_PEPTIDE)
    with FrameWriter(XML, IO_NAME, path) as writer:
        for first in range(0, frames, step_frames):
            writer.write(random_batch(schema, min(step_frames, frames - first), rng))
        return writer.bytes_written


def evict(path: Path) -> None:
    """Drop the store's files from the page cache, so that reading them hits the disk."""
    for file in path.rglob("*"):
        if file.is_file():
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def io_counters() -> dict[str, int]:
    """This process's `read_bytes` and `rchar` from /proc/self/io."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {key: int(fields[key]) for key in ("read_bytes", "rchar")}


def read_once(path: Path, variables: list[str] | None) -> dict[str, float]:
    """Read the whole store with a new StoreReader; per-frame bytes and frames/s."""
    evict(path)
    before, started = io_counters(), time.perf_counter()
    reader = StoreReader(XML, IO_NAME, path, variables=variables)
    batches = reader.read_new()
    reader.close()
    seconds, after = time.perf_counter() - started, io_counters()
    frames = sum(len(next(iter(batch.values()))) for batch in batches)
    returned = sum(array.nbytes for batch in batches for array in batch.values())
    return {"frames/s": frames / seconds, "array B/frame": returned / frames,
            **{f"{key} B/frame": (after[key] - before[key]) / frames for key in before}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4000)
    parser.add_argument("--step-frames", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5, help="reads of each kind, alternating")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the store")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ddmd-store-read-", dir=args.dir) as folder:
        store = Path(folder) / "agg-0000.bp"
        written = build_store(store, args.frames, args.step_frames)
        fields = sorted(frame_schema(*FS_PEPTIDE))
        print(f"store: {args.frames} frames in steps of {args.step_frames}, "
              f"{written / args.frames:.0f} B/frame written, fields {fields}")
        kinds = {"all variables": None, "contact_map only": [CONTACT_MAP]}
        runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
        for _ in range(args.repeats):
            for kind, variables in kinds.items():
                runs[kind].append(read_once(store, variables))
    means = {kind: {key: statistics.mean(r[key] for r in rs) for key in rs[0]}
             for kind, rs in runs.items()}
    keys = list(means["all variables"])
    print(f"{'':18s}" + "".join(f"{key:>22s}" for key in keys))
    for kind, row in means.items():
        print(f"{kind:18s}" + "".join(f"{row[key]:22,.0f}" for key in keys))
    full, only = means["all variables"], means["contact_map only"]
    gain = {key: (only[key] / full[key]) if key == "frames/s" else full[key] / max(only[key], 1)
            for key in keys}  # > 1: contact_map only is better by that factor
    print(f"{'gain (x)':18s}" + "".join(f"{gain[key]:22.2f}" for key in keys))
    spread = [r["frames/s"] for rs in runs.values() for r in rs]
    print(f"({args.repeats} alternating reads of each; frames/s of single reads "
          f"{min(spread):,.0f}..{max(spread):,.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
