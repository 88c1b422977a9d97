"""The task plan: what the launcher asks an engine to run, independent of the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ROLE_ORDER = ("aggregator", "sim", "trainer", "agent")


@dataclass(frozen=True)
class TaskSpec:
    """One always-running task: a plain command line plus its resource request."""

    role: str  # one of ROLE_ORDER
    index: int
    executable: str  # e.g. sys.executable
    arguments: list[str]  # e.g. ["-m", "ddmd_stream.sim", "-c", "RUN/tasks/sim-0000/task.yaml"]
    workdir: Path  # RUN/tasks/<role>-<index>; stdout/stderr go here
    cpus: int = 1
    gpus: int = 0  # GPU slots: 1/simulations_per_gpu of a GPU each (resources.py)
    gpu_type: str = ""  # "CUDA": RADICAL-Pilot sets CUDA_VISIBLE_DEVICES to the slot ids
    ranks: int = 1  # MPI ranks (the agent's resources.agent.ranks); cpus is per rank
    pre_exec: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index:04d}"

    @property
    def command_line(self) -> list[str]:
        return [self.executable, *self.arguments]


@dataclass(frozen=True)
class TaskPlan:
    """All tasks of a run, grouped by role (one EnTK pipeline per role)."""

    tasks: list[TaskSpec]
    run_dir: Path

    def by_role(self) -> dict[str, list[TaskSpec]]:
        grouped: dict[str, list[TaskSpec]] = {role: [] for role in ROLE_ORDER}
        for task in self.tasks:
            grouped[task.role].append(task)
        return {role: tasks for role, tasks in grouped.items() if tasks}

    @property
    def total_cpus(self) -> int:
        return sum(t.cpus * t.ranks for t in self.tasks)

    @property
    def total_gpus(self) -> int:
        return sum(t.gpus for t in self.tasks)
