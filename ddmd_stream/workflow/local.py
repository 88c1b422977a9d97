"""Plain-subprocess engine for quick local debugging and component tests.

Runs every task of a plan at once, restarts a task that fails (bounded), and returns when all
tasks have exited. RADICAL-EnTK (`workflow/entk.py`) stays the default engine.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from ddmd_stream.rundir import RunDir
from ddmd_stream.workflow.cleanup import record_process
from ddmd_stream.workflow.plan import TaskPlan, TaskSpec

logger = logging.getLogger(__name__)

EventCallback = Callable[[str, dict], None]


@dataclass
class _Running:
    spec: TaskSpec
    process: subprocess.Popen
    restarts: int = 0


def start_task(spec: TaskSpec) -> subprocess.Popen:
    """Start `spec` in its workdir (stdout/stderr there) and record it as the run's."""
    spec.workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **spec.environment}
    with open(spec.workdir / "stdout", "ab") as out, open(spec.workdir / "stderr", "ab") as err:
        process = subprocess.Popen(
            spec.command_line,
            cwd=spec.workdir,
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,
        )
    record_process(spec.workdir, process.pid)
    return process


class LocalEngine:
    """Starts tasks as subprocesses; `run()` waits for all of them."""

    def __init__(
        self, plan: TaskPlan, max_restarts: int = 3, on_event: EventCallback | None = None
    ):
        self.plan = plan
        self.max_restarts = max_restarts
        self.on_event = on_event or (lambda name, data: None)
        self.running: list[_Running] = []
        self.states: dict[str, str] = {}

    def start(self) -> None:
        for spec in self.plan.tasks:
            self.running.append(_Running(spec, start_task(spec)))
            self.on_event("task_started", {"task": spec.name})

    def poll(self) -> bool:
        """Reap finished tasks, restart failed ones; True while any task runs."""
        for entry in list(self.running):
            code = entry.process.poll()
            if code is None:
                continue
            stopping = RunDir(self.plan.run_dir).stop_file.exists()  # as the EnTK engine
            if code != 0 and entry.restarts < self.max_restarts and not stopping:
                entry.restarts += 1
                logger.warning(
                    "%s exited with %d; restart %d/%d",
                    entry.spec.name,
                    code,
                    entry.restarts,
                    self.max_restarts,
                )
                self.on_event(
                    "task_restart",
                    {"task": entry.spec.name, "code": code, "restart": entry.restarts},
                )
                entry.process = start_task(entry.spec)
                continue
            self.states[entry.spec.name] = "DONE" if code == 0 else "FAILED"
            self.on_event("task_exit", {"task": entry.spec.name, "code": code})
            self.running.remove(entry)
        return bool(self.running)

    def run(self, poll_s: float = 0.5, timeout_s: float | None = None) -> dict[str, str]:
        self.start()
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while self.poll():
            if end is not None and time.monotonic() > end:
                self.terminate()
                break
            time.sleep(poll_s)
        return self.states

    def terminate(self, grace_s: float = 10.0) -> None:
        for entry in self.running:
            entry.process.terminate()
        deadline = time.monotonic() + grace_s
        for entry in self.running:
            try:
                entry.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                entry.process.kill()
                entry.process.wait()
            self.states[entry.spec.name] = "KILLED"
        self.running.clear()


def run_local(
    plan: TaskPlan, max_restarts: int = 3, on_event: EventCallback | None = None
) -> dict[str, str]:
    return LocalEngine(plan, max_restarts, on_event).run()
