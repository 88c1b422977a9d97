"""Trainer task: `python -m ddmd_stream.train -c TASK.yaml`."""

from __future__ import annotations

from ddmd_stream.task import TaskContext, run_task


def main(ctx: TaskContext) -> None:
    from ddmd_stream.ml.train import main as train

    train(ctx)


if __name__ == "__main__":
    raise SystemExit(run_task("trainer", main))
