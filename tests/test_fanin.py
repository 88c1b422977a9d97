"""Fan-in: one real aggregator keeps storing its other streams while one writer is SIGSTOPped.

Writers are real `FrameWriter` processes over the shipped SST XML (a simulation's stream
without the MD); the aggregator is the real task (`python -m ddmd_stream.aggregate`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from conftest import SST_XML, wait_for

from ddmd_stream.streams import engine_type, read_store, stream_ready
from ddmd_stream.workflow.local import start_task
from ddmd_stream.workflow.plan import TaskPlan, TaskSpec
from ddmd_stream.workflow.prepare import prepare

# A simulation-like writer: one frame (sim_id, segment_id, step, wall_time, positions) every
# `delay` s until STOP appears; then it closes and prints how many frames it wrote (and
# replayed: with `replay`, the simulations' ReplayingWriter).
WRITER = r"""
import json, os, sys, time
import numpy as np
from ddmd_stream.streams import FrameWriter
from ddmd_stream.streams.replay import ReplayingWriter
a = json.loads(sys.argv[1])
kind = ReplayingWriter if a["replay"] else FrameWriter
w = kind(a["xml"], "SimulationOutput", a["path"], open_timeout_s=60, stop_file=a["stop"])
step = 0
while not os.path.exists(a["stop"]):
    w.write({"sim_id": np.full(1, a["sim"], np.int64), "segment_id": np.zeros(1, np.int64),
             "step": np.full(1, step, np.int64), "wall_time": np.full(1, time.time()),
             "positions": np.zeros((1, 22, 3), np.float32)})
    step += 1
    time.sleep(a["delay"])
w.close()
print(json.dumps({"frames": step, "replayed": getattr(w, "replayed", 0)}), flush=True)
"""


def start_writer(path: Path, sim: int, stop: Path, delay: float = 0.02,
                 replay: bool = False) -> subprocess.Popen:
    args = {"xml": str(SST_XML), "path": str(path), "sim": sim, "stop": str(stop),
            "delay": delay, "replay": replay}
    with open(path.parent / f"writer-{sim}.stderr", "w") as stderr:
        return subprocess.Popen([sys.executable, "-c", WRITER, json.dumps(args)],
                                stdout=subprocess.PIPE, stderr=stderr, text=True,
                                start_new_session=True)


@dataclass
class FanIn:
    """A prepared run of one aggregator over the streams of simulation-like writers."""

    plan: TaskPlan
    stop: Path
    store: Path
    paths: dict[int, Path]

    @property
    def aggregator(self) -> TaskSpec:
        return next(spec for spec in self.plan.tasks if spec.role == "aggregator")

    def stored(self, sim: int | None = None) -> int:
        """Frames in the store (of simulation `sim`, or all)."""
        try:
            sim_ids = read_store(self.store, ["sim_id"])["sim_id"]
        except Exception:  # no store yet, or a step being written
            return 0
        return len(sim_ids) if sim is None else int((sim_ids == sim).sum())


def fan_in(make_config: Callable[..., Any], sims: int, duration_s: float) -> FanIn:
    config = make_config(workflow={"duration_s": duration_s},
                         simulation={"num_simulations": sims},
                         aggregation={"flush_interval_s": 0.2, "idle_backoff_max_s": 0.1})
    plan, run = prepare(config), config.workflow.run_dir
    return FanIn(plan, run / "STOP", run / "stream" / "agg-0000.bp",
                 {i: run / "stream" / f"sim-{i:04d}" for i in range(sims)})


def test_stopped_writer_does_not_stall_the_others(make_config, processes) -> None:
    setup = fan_in(make_config, sims=3, duration_s=120)
    stop, store, paths, frames_of = setup.stop, setup.store, setup.paths, setup.stored
    writers = {i: start_writer(paths[i], i, stop) for i in range(3)}
    processes.extend(writers.values())

    def others_grow_by(frames: int, timeout_s: float = 30) -> bool:
        before = {i: frames_of(i) for i in (0, 2)}
        return wait_for(lambda: all(frames_of(i) >= before[i] + frames for i in (0, 2)),
                        timeout_s=timeout_s, interval_s=0.2)

    # Writer 1 stops mid-handshake: its contact file is out, its open waits for a reader.
    engine = engine_type(SST_XML, "SimulationOutput")
    assert wait_for(lambda: stream_ready(paths[1], engine) is not None, timeout_s=30)
    writers[1].send_signal(signal.SIGSTOP)
    aggregator = start_task(setup.aggregator)
    processes.append(aggregator)
    try:
        assert others_grow_by(40, timeout_s=60), "a writer stopped before its open stalled"
        writers[1].send_signal(signal.SIGCONT)
        assert wait_for(lambda: frames_of(1) > 20, timeout_s=60), "sim 1 never stored"

        # Writer 1 stops mid-run.
        writers[1].send_signal(signal.SIGSTOP)
        assert others_grow_by(40), "a writer stopped mid-run stalled the others"
        stalled = frames_of(1)
        writers[1].send_signal(signal.SIGCONT)
        assert wait_for(lambda: frames_of(1) > stalled + 20, timeout_s=30), "sim 1 not resumed"
        assert aggregator.poll() is None
    finally:
        for writer in writers.values():
            writer.send_signal(signal.SIGCONT)
        stop.write_text("test\n")
    written = {i: json.loads(w.communicate(timeout=60)[0])["frames"] for i, w in writers.items()}
    assert aggregator.wait(timeout=60) == 0
    stored = read_store(store, ["sim_id", "step"])
    ids = list(zip(stored["sim_id"].tolist(), stored["step"].tolist(), strict=True))
    assert len(set(ids)) == len(ids), "a frame was stored twice"
    counts = {i: int(np.sum(stored["sim_id"] == i)) for i in range(3)}
    assert counts == written, "frames lost"


def test_crashed_reader_process_reconnects(tmp_path: Path, processes) -> None:
    """A pump killed mid-stream (as by a segfault in ADIOS) costs only the frames in flight:
    the poller reopens the stream of a live writer in a new pump."""
    from ddmd_stream.streams import StreamPoller

    path, stop = tmp_path / "sim-0000", tmp_path / "STOP"
    writer = start_writer(path, 0, stop)
    processes.append(writer)
    poller = StreamPoller(SST_XML, "SimulationOutput", {0: path}, open_timeout_s=30)
    steps: list[int] = []

    def read_until(count: int) -> bool:
        def enough() -> bool:
            steps.extend(s for _, batch in poller.poll() for s in batch["step"].tolist())
            return len(steps) >= count
        return wait_for(enough, timeout_s=60, interval_s=0.02)

    try:
        assert read_until(20)
        first_pump = poller.sources[0].pump.process
        os.kill(first_pump.pid, signal.SIGKILL)
        killed_at = len(steps)
        assert read_until(killed_at + 40), "stream not reopened after its reader crashed"
        assert poller.sources[0].pump.process is not first_pump
        assert poller.sources[0].deaths == 0 and poller.open_count == 1
        assert steps == sorted(set(steps)), "a frame came twice or out of order"
    finally:
        stop.write_text("test\n")
        writer.communicate(timeout=60)
        poller.close()



def test_aggregator_killed_twice_loses_no_frame(make_config, processes) -> None:
    """kill -9 of the aggregator while its simulations stream: each holds its frames until the
    next aggregator connects and replays what was not stored; every frame is stored once."""
    from ddmd_stream.streams import ReaderInfo

    setup = fan_in(make_config, sims=2, duration_s=180)
    stop, store, paths, stored_steps = setup.stop, setup.store, setup.paths, setup.stored
    writers = [start_writer(paths[i], i, stop, delay=0.01, replay=True) for i in range(2)]
    processes.extend(writers)

    def start_and_store(frames: int = 100) -> subprocess.Popen:
        aggregator = start_task(setup.aggregator)
        processes.append(aggregator)
        before = stored_steps()
        assert wait_for(lambda: stored_steps() > before + frames, timeout_s=90, interval_s=0.2)
        return aggregator

    def kill(aggregator: subprocess.Popen) -> None:
        readers = [ReaderInfo.read(path) for path in paths.values()]
        os.kill(aggregator.pid, signal.SIGKILL)  # its pumps end on their own
        aggregator.wait(timeout=10)
        assert wait_for(lambda: all(r is not None and r.known_dead() for r in readers), 10)

    for _ in range(2):
        kill(start_and_store())
    aggregator = start_and_store()
    stop.write_text("test\n")
    results = [json.loads(w.communicate(timeout=60)[0]) for w in writers]
    assert aggregator.wait(timeout=60) == 0
    stored = read_store(store, ["sim_id", "step"])
    for sim, result in enumerate(results):
        steps = np.sort(stored["step"][stored["sim_id"] == sim])
        assert len(np.unique(steps)) == len(steps), f"sim {sim}: a frame was stored twice"
        assert steps.tolist() == list(range(result["frames"])), f"sim {sim}: frames lost"
        assert result["replayed"] > 0  # what the killed aggregators held came again
