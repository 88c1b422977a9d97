"""Cost of the event recorder: µs per `EventRecorder.event` call, and its share of task time.

    python benchmarks/event_overhead.py [RUN_DIR] [--count 100000]

Times `count` calls recording to a real file (buffered, flushed every 2 s as in the tasks).
Given a run directory, also prints the implied overhead: events recorded × µs/event over the
summed task time (target: < 0.05 %). The run report does not time anything: it uses
`ddmd_stream.report.metrics.EVENT_COST_US`, the figure this script printed last (update it
after changing the recorder).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ddmd_stream.events import EventRecorder
from ddmd_stream.report.load import load_run
from ddmd_stream.report.metrics import EVENT_COST_US, recorder_overhead


def measure_event_cost(count: int = 100_000) -> float:
    """Microseconds per `EventRecorder.event` call (recording to a real file, flushing as usual)."""
    with tempfile.TemporaryDirectory(prefix="ddmd-events-") as folder:
        recorder = EventRecorder(Path(folder) / "events.jsonl", "bench-0000")
        started = time.perf_counter()
        for i in range(count):
            recorder.event("segment", segment=i, steps=1000, md_s=2.5, put_s=0.004, ns=0.002)
        recorder.close()
        return (time.perf_counter() - started) / count * 1e6


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.4f} %"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, nargs="?", help="a run directory to relate to")
    parser.add_argument("--count", type=int, default=100_000, help="calls to time")
    args = parser.parse_args(argv)
    cost = measure_event_cost(args.count)
    print(f"EventRecorder.event: {cost:.2f} µs/event ({args.count} calls);"
          f" the report assumes {EVENT_COST_US:.2f}")
    if args.run_dir:
        overhead = recorder_overhead(load_run(args.run_dir), cost)
        print(f"{args.run_dir}: {overhead['events']} events -> {_percent(overhead['share'])}"
              f" of task time (busiest task {_percent(overhead['worst_task_share'])})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
