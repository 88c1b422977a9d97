"""Agent task: `python -m ddmd_stream.agent -c TASK.yaml`."""

from __future__ import annotations

from ddmd_stream.task import TaskContext, run_task


def main(ctx: TaskContext) -> None:
    from ddmd_stream.agent.agent import main as agent

    agent(ctx)


if __name__ == "__main__":
    raise SystemExit(run_task("agent", main))
