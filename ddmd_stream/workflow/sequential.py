"""Sequential mode (`workflow.mode: sequential`): the DeepDriveMD-F pattern from the same tasks.

One EnTK pipeline whose stages repeat, one iteration after another:

    sim stage (N simulations, one segment each) → trainer stage (one round; every
    `workflow.train_every`-th iteration, starting with the first) → agent stage (one cycle)
    → next sim stage (each simulation restarts from the catalog, or continues) → ...

Every task runs with `once: true` in its task file: the simulation resumes from its checkpoint
(`RUN/tasks/sim-i/state.npz`), restarts from the outlier catalog when it has records, runs one
segment, appends it as one step to its own BP store (`RUN/stream/agg-sim-i.bp`, written with
the `streams.aggregator_io` IO of the XML, so no SST and no aggregator) and exits; the trainer
continues from the newest published model, trains one round and exits; the agent runs one
cycle and exits. The next stage is appended by the finished stage's `post_exec`, until the
wall time (`workflow.duration_s`), a STOP file, or `workflow.max_iterations`.

A failed task is run again in a stage of its own (at most `workflow.max_task_restarts` times
per task over the run) before the schedule moves on. `run_sequential_local` runs the same
schedule with plain subprocesses, for debugging.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ddmd_stream.config import RunConfig, WorkflowConfig
from ddmd_stream.rundir import RunDir
from ddmd_stream.workflow.plan import TaskPlan, TaskSpec

logger = logging.getLogger(__name__)

EventCallback = Callable[[str, dict], None]
Stage = tuple[str, list[TaskSpec]]  # (name, tasks); names: letters, digits and '.' (EnTK)


class Schedule:
    """The order of stages: which comes next, and when the run is over."""

    def __init__(self, plan: TaskPlan, workflow: WorkflowConfig, deadline: float):
        self.by_role = plan.by_role()
        self.run = RunDir(plan.run_dir)
        self.train_every = workflow.train_every
        self.max_iterations = workflow.max_iterations
        self.deadline = deadline
        self.iteration = 0
        self.position = 0
        self.lock = threading.Lock()

    def roles(self, iteration: int) -> list[str]:
        """The stages of iteration `iteration` (1-based)."""
        training = (iteration - 1) % self.train_every == 0
        wanted = ["sim", "trainer", "agent"] if training else ["sim", "agent"]
        return [role for role in wanted if role in self.by_role]

    def stop_reason(self) -> str | None:
        if self.run.stop_file.exists():
            return "STOP file"
        if time.time() >= self.deadline:
            return "wall time reached"
        return None

    def next_stage(self) -> Stage | None:
        """The stage to run next, or None when the run is over."""
        with self.lock:
            reason = self.stop_reason()
            if reason:
                logger.info("sequential run ends after iteration %d: %s", self.iteration, reason)
                return None
            if self.iteration == 0 or self.position >= len(self.roles(self.iteration)):
                if self.max_iterations is not None and self.iteration >= self.max_iterations:
                    logger.info("sequential run ends: %d iterations done", self.iteration)
                    return None
                self.iteration, self.position = self.iteration + 1, 0
            role = self.roles(self.iteration)[self.position]
            self.position += 1
            logger.info("iteration %d: %s stage", self.iteration, role)
            return f"{role}.{self.iteration}", self.by_role[role]


# --------------------------------------------------------------------------- EnTK


def _entk_restarter_class():
    from ddmd_stream.workflow.entk import Restarter

    class SequentialRestarter(Restarter):
        """A Restarter whose finished stage appends the schedule's next stage (or a retry)."""

        def __init__(self, plan: TaskPlan, schedule: Schedule, max_restarts: int,
                     on_event: EventCallback | None, base_env: dict[str, str]):
            super().__init__(plan, max_restarts, on_event, base_env)
            self.schedule = schedule
            self.ran: set[str] = set()

        def named_stage(self, name: str, specs: list[TaskSpec], pipeline):
            stage = self.stage(specs, pipeline)
            stage.name = name
            self.ran.update(spec.name for spec in specs)
            self.emit("stage_start", {"stage": name, "tasks": [s.name for s in specs]})
            return stage

        def after_stage(self, stage, pipeline) -> None:
            try:
                with self.lock:
                    again = [spec for task in stage.tasks if (spec := self._settle(task))]
                self.emit("stage_end", {"stage": stage.name})
                if again:
                    pipeline.add_stages(self.named_stage(f"{stage.name}.retry", again, pipeline))
                    return
                following = self.schedule.next_stage()
                if following is not None:
                    pipeline.add_stages(self.named_stage(*following, pipeline))
            except Exception:  # an exception here would kill EnTK's dequeue thread
                logger.exception("post_exec of %s failed", stage.name)

        def final_states(self) -> dict[str, str]:
            """Like Restarter's, for the tasks that ran (a run may end before some ever do)."""
            return {name: state for name, state in super().final_states().items()
                    if name in self.ran}

    return SequentialRestarter


def run_sequential_entk(
    plan: TaskPlan, config: RunConfig, deadline: float, on_event: EventCallback | None = None
) -> dict[str, str]:
    """Run the sequential schedule as one EnTK pipeline; the final state per task name."""
    from radical.entk import Pipeline

    from ddmd_stream.workflow.entk import run_workflow
    from ddmd_stream.workflow.resources import task_tmpdir

    schedule = Schedule(plan, config.workflow, deadline)
    restarter = _entk_restarter_class()(plan, schedule, config.workflow.max_task_restarts,
                                        on_event, {"TMPDIR": task_tmpdir()})

    def pipelines() -> list:
        first = schedule.next_stage()
        if first is None:
            return []
        pipeline = Pipeline()
        pipeline.name = "sequential"
        pipeline.add_stages(restarter.named_stage(*first, pipeline))
        return [pipeline]

    return run_workflow(plan, config.resources, restarter, pipelines)


# --------------------------------------------------------------------------- local


def run_sequential_local(
    plan: TaskPlan, config: RunConfig, deadline: float, on_event: EventCallback | None = None
) -> dict[str, str]:
    """The same schedule with plain subprocesses (each stage's tasks at once)."""
    from ddmd_stream.workflow.local import LocalEngine

    emit = on_event or (lambda name, data: None)
    schedule = Schedule(plan, config.workflow, deadline)
    states: dict[str, str] = {}
    while (stage := schedule.next_stage()) is not None:
        name, specs = stage
        emit("stage_start", {"stage": name, "tasks": [s.name for s in specs]})
        engine = LocalEngine(TaskPlan(specs, plan.run_dir), config.workflow.max_task_restarts,
                             on_event)
        states.update(engine.run(poll_s=0.2))
        emit("stage_end", {"stage": name})
    return states


def run_sequential(
    plan: TaskPlan, config: RunConfig, deadline: float, on_event: EventCallback | None = None
) -> dict[str, str]:
    """Sequential mode on the configured engine (`workflow.engine`)."""
    run = run_sequential_local if config.workflow.engine == "local" else run_sequential_entk
    return run(plan, config, deadline, on_event)
