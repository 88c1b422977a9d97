"""Aggregator throughput: frames/s from N SST writers into one BP5 store, and per CPU-second.

    python benchmarks/aggregator_throughput.py [--quick] [--writers 1 4 16] [--frames 8000]
                                               [--queue-limit 8] [--flush-interval 0.5]

For each writer count N: a run directory is prepared (`workflow.prepare.prepare_run_dir`) with
a copy of the shipped `adios_xml/sst.xml` (QueueLimit from --queue-limit), and the real
aggregator task (`python -m ddmd_stream.aggregate -c TASK.yaml`, members 0..N-1) is started.
N writer processes (this script with --writer) each open their SST stream with
`streams.FrameWriter`, wait at a common start line, then push --frames/N FSD-EY-sized frames
(28 Cα positions, 28x28 uint8 contact map, 504-atom all_positions + velocities in float32,
rmsd, step, time, ids; ~13 KB) one frame per ADIOS step as fast as they can.

Wall time runs from the start line to the end of the aggregator's last store write (its
`write` events) -> frames/s (to its last stream read -> read/s, without the flush latency).
The CPU time (psutil, user + system) of the aggregator and its stream pumps (the processes
below it) from the start line until its status says every frame is stored -> frames per
aggregator CPU-second. The store is read back afterwards to check every frame arrived once.
Writers and aggregator share the machine's cores. Target: >= 1,000 frames/s on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ADIOS2_IP", "127.0.0.1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SST_XML = REPO / "adios_xml" / "sst.xml"
N_RES, N_ATOMS = 28, 504  # FSD-EY (1FME)


def fsd_ey_frames(count: int, sim_id: int, seed: int) -> list[dict[str, np.ndarray]]:
    """`count` distinct one-frame batches shaped like FSD-EY frames (md.reporter schema)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        frames.append({
            "positions": rng.normal(scale=10.0, size=(1, N_RES, 3)).astype(np.float32),
            "contact_map": (rng.random((1, N_RES, N_RES)) < 0.2).astype(np.uint8),
            "rmsd": np.array([rng.uniform(1, 10)], np.float32),
            "step": np.array([i], np.int64),
            "time_ps": np.array([i * 50.0]),
            "sim_id": np.array([sim_id], np.int64),
            "segment_id": np.array([0], np.int64),
            "structure_id": np.array([0], np.int64),
            "all_positions": rng.normal(size=(1, N_ATOMS, 3)).astype(np.float32),
            "velocities": rng.normal(size=(1, N_ATOMS, 3)).astype(np.float32),
        })
    return frames


def writer_main(args: argparse.Namespace) -> int:
    """One simulation-like writer: open, report ready, wait for the start line, push frames."""
    from ddmd_stream.streams import FrameWriter

    frames = fsd_ey_frames(64, args.writer, seed=args.writer)
    writer = FrameWriter(args.xml, "SimulationOutput", args.stream, open_timeout_s=120)
    Path(f"{args.go}.ready-{args.writer}").touch()
    while not Path(args.go).exists():
        time.sleep(0.001)
    started = time.perf_counter()
    for i in range(args.count):
        batch = dict(frames[i % len(frames)])
        batch["step"] = np.array([i], np.int64)
        writer.write(batch)
    elapsed = time.perf_counter() - started
    writer.close()
    print(json.dumps({"writer": args.writer, "frames": writer.frames_written,
                      "seconds": elapsed, "put_s": writer.put_seconds,
                      "bytes": writer.bytes_written}))
    return 0


def tuned_xml(folder: Path, queue_limit: int) -> Path:
    text = SST_XML.read_text()
    text = re.sub(r'(key="QueueLimit" value=")\d+(")', rf"\g<1>{queue_limit}\g<2>", text)
    xml = folder / "sst.xml"
    xml.write_text(text)
    return xml


def tree_cpu_seconds(process) -> dict[int, float]:
    """CPU seconds (user + system) of the aggregator and every descendant: its pumps are
    children of its forkserver (ddmd_stream/streams/pump.py)."""
    import psutil

    seconds = {}
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:  # ended meanwhile
            continue
        seconds[proc.pid] = times.user + times.system
    return seconds


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def last_read_and_write(events: Path) -> tuple[float, float]:
    """time.time() of the aggregator's last stream read and of the end of its last store write."""
    from ddmd_stream.events import read_events

    records = read_events(events)
    last_read = max(e["t"] for e in records if e["event"] == "read")
    last_write = max(e["t"] + e["dur"] for e in records if e["event"] == "write")
    return last_read, last_write


def measure(n_writers: int, total_frames: int, queue_limit: int, flush_s: float,
            tmp: Path) -> dict[str, float]:
    import psutil

    from ddmd_stream.config import parse_config
    from ddmd_stream.streams import read_store
    from ddmd_stream.task import TaskFile
    from ddmd_stream.workflow.prepare import prepare_run_dir

    per_writer = max(1, total_frames // n_writers)
    expected = per_writer * n_writers
    folder = tmp / f"w{n_writers}"
    folder.mkdir()
    config = parse_config({
        "workflow": {"run_dir": str(folder / "run"), "engine": "local", "duration_s": 3600,
                     "heartbeat_s": 0.05},
        "simulation": {"num_simulations": n_writers},
        "aggregation": {"flush_interval_s": flush_s},
        "streams": {"adios_xml": str(tuned_xml(folder, queue_limit)), "open_timeout_s": 120},
    }, "<aggregator benchmark>", folder)
    run = prepare_run_dir(config)
    task_file = run.task_file("aggregator", 0)
    TaskFile("aggregator", 0, run.root, time.time() + 3600, list(range(n_writers))).save(task_file)
    status_file = run.task_dir("aggregator", 0) / "status.json"
    go = folder / "GO"
    log = open(folder / "aggregator.log", "w")  # noqa: SIM115 - closed below
    aggregator = subprocess.Popen([sys.executable, "-m", "ddmd_stream.aggregate", "-c",
                                   str(task_file)], stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    writers = [subprocess.Popen([sys.executable, __file__, "--writer", str(i), "--stream",
                                 str(run.sim_stream(i)), "--xml", str(run.adios_xml),
                                 "--count", str(per_writer), "--go", str(go)],
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
               for i in range(n_writers)]
    try:
        proc = psutil.Process(aggregator.pid)
        deadline = time.monotonic() + 180
        while sum(Path(f"{go}.ready-{i}").exists() for i in range(n_writers)) < n_writers:
            if time.monotonic() > deadline or aggregator.poll() is not None:
                raise RuntimeError(f"writers did not all connect; see {folder}/aggregator.log")
            time.sleep(0.05)
        cpu0, t0 = tree_cpu_seconds(proc), time.time()
        go.touch()
        deadline = time.monotonic() + 600
        while read_status(status_file).get("frames", 0) < expected:
            if time.monotonic() > deadline or aggregator.poll() is not None:
                raise RuntimeError(f"store did not reach {expected} frames; see {folder}")
            time.sleep(0.01)
        cpu1 = tree_cpu_seconds(proc)
        reports = [json.loads(w.communicate(timeout=120)[0].strip().splitlines()[-1])
                   for w in writers]
        run.stop_file.write_text("benchmark done\n")
        aggregator.wait(timeout=60)
    finally:
        for process in [aggregator, *writers]:
            if process.poll() is None:
                process.kill()
                process.wait()
        log.close()
    t_read, t1 = last_read_and_write(run.task_dir("aggregator", 0) / "events.jsonl")
    stored = read_store(run.aggregator_store(0), ["sim_id", "step"])
    ids = set(zip(stored["sim_id"].tolist(), stored["step"].tolist(), strict=True))
    complete = len(stored["sim_id"]) == expected and len(ids) == expected
    wall, cpu = t1 - t0, cpu_between(cpu0, cpu1)
    writer_put_ms = 1e3 * sum(r["put_s"] for r in reports) / sum(r["frames"] for r in reports)
    return {"writers": n_writers, "frames": expected, "stored": len(stored["sim_id"]),
            "complete": complete, "wall_s": wall, "fps": expected / wall,
            "fps_read": expected / (t_read - t0), "cpu_s": cpu,
            "fps_per_cpu": expected / cpu if cpu > 0 else float("inf"),
            "agg_cpu_share": cpu / wall, "writer_put_ms": writer_put_ms,
            "mb_per_s": sum(r["bytes"] for r in reports) / wall / 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames (~1 min)")
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--frames", type=int, help="frames per writer count, split among the"
                        " writers (default 8000; --quick 2000)")
    parser.add_argument("--queue-limit", type=int, default=8, help="SST QueueLimit per writer")
    parser.add_argument("--flush-interval", type=float, default=0.5,
                        help="aggregation.flush_interval_s")
    # internal: the writer processes
    parser.add_argument("--writer", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stream", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--xml", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--go", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.writer is not None:
        return writer_main(args)
    total = args.frames or (2000 if args.quick else 8000)
    print(f"{total} FSD-EY frames per row over SST (QueueLimit {args.queue_limit}) into BP5,"
          f" flush every {args.flush_interval:g} s; {os.cpu_count()} cores,"
          f" load average {os.getloadavg()[0]:.2f}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ddmd-aggbench-") as tmp:
        for n in args.writers:
            rows.append(measure(n, total, args.queue_limit, args.flush_interval, Path(tmp)))
            row = rows[-1]
            print(f"  {n} writer(s): {row['fps']:.0f} frames/s (load average "
                  f"{os.getloadavg()[0]:.2f})", flush=True)
    print()
    print(f"{'writers':>7} {'frames':>7} {'complete':>8} {'wall s':>7} {'frames/s':>9}"
          f" {'read/s':>7}"
          f" {'MB/s':>6} {'agg CPU s':>9} {'agg CPU %':>9} {'frames/CPU-s':>12}"
          f" {'put ms/frame':>12}")
    for r in rows:
        print(f"{r['writers']:7d} {r['frames']:7d} {'yes' if r['complete'] else 'NO':>8}"
              f" {r['wall_s']:7.2f} {r['fps']:9.0f} {r['fps_read']:7.0f} {r['mb_per_s']:6.1f}"
              f" {r['cpu_s']:9.2f}"
              f" {100 * r['agg_cpu_share']:8.0f}% {r['fps_per_cpu']:12.0f}"
              f" {r['writer_put_ms']:12.3f}")
    print()
    print("wall s: start line -> end of the last store write (includes up to one flush"
          " interval of latency); read/s: frames over start line -> last stream read.")
    print("frames/CPU-s = frames stored per second of aggregator CPU time (what one core"
          " sustains); put ms/frame = writers' mean FrameWriter.write time (includes blocking"
          " on a full queue). target: >= 1,000 frames/s on one core.")
    print(f"load average now {os.getloadavg()[0]:.2f}")
    return 0 if all(r["complete"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
