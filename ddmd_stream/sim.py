"""Simulation task: `python -m ddmd_stream.sim -c TASK.yaml`."""

from __future__ import annotations

from ddmd_stream.task import TaskContext, run_task


def main(ctx: TaskContext) -> None:
    from ddmd_stream.md.simulate import main as simulate

    simulate(ctx)


if __name__ == "__main__":
    raise SystemExit(run_task("sim", main))
