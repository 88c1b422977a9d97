"""Cost of the event recorder: µs per `EventRecorder.event` call, and its share of task time.

    python benchmarks/event_overhead.py [RUN_DIR] [--count 100000]

Times `count` calls recording to a real file (buffered, flushed every 2 s as in the tasks).
Given a run directory, also prints the implied overhead: events recorded × µs/event over the
summed task time (target: < 0.05 %).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ddmd_stream.profile.report import load_run, measure_event_cost, recorder_overhead


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, nargs="?", help="a run directory to relate to")
    parser.add_argument("--count", type=int, default=100_000, help="calls to time")
    args = parser.parse_args(argv)
    cost = measure_event_cost(args.count)
    print(f"EventRecorder.event: {cost:.2f} µs/event ({args.count} calls)")
    if args.run_dir:
        overhead = recorder_overhead(load_run(args.run_dir), cost)
        share = overhead["share"]
        shown = "-" if share is None else f"{100 * share:.4f} %"
        worst = overhead["worst_task_share"]
        worst_shown = "-" if worst is None else f"{100 * worst:.4f} %"
        print(f"{args.run_dir}: {overhead['events']} events -> {shown} of task time"
              f" (busiest task {worst_shown})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
