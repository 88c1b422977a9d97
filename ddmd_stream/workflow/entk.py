"""RADICAL-EnTK engine: every task of a plan runs at once in one pilot; failed tasks restart.

Each task gets its own pipeline by default (`group="task"`): EnTK runs a stage's `post_exec`
only once *every* task of the stage has finished, so with one stage per role a crashed
simulation would wait for all other simulations to end before it is restarted. With
`group="role"` there is one pipeline per role (four in all, as in DeepDriveMD), and restarts
happen when the whole role has finished.

A task that fails (non-zero exit) is cloned into a new stage appended to its pipeline by the
stage's `post_exec`, at most `max_restarts` times per task; no restart once the run's STOP file
exists. Tasks that exit 0 are done. RADICAL's files go under `RUN/radical/` (see
`resources.py`); each task runs in its `spec.workdir`, with `stdout`/`stderr` there (the
logs of a failed attempt N are kept as `stdout.N`/`stderr.N`).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Literal

from ddmd_stream.config import ResourcesConfig
from ddmd_stream.rundir import RunDir
from ddmd_stream.workflow import radical_patches
from ddmd_stream.workflow.cleanup import kill_leftovers
from ddmd_stream.workflow.entk_patches import (
    idle_getters,
    start_task_manager_early,
    throttle_polling,
)
from ddmd_stream.workflow.plan import TaskPlan, TaskSpec
from ddmd_stream.workflow.resources import (
    pilot_description,
    radical_root,
    task_tmpdir,
    tuning_enabled,
    write_radical_config,
)

logger = logging.getLogger(__name__)

EventCallback = Callable[[str, dict], None]
Grouping = Literal["task", "role"]

# Pilot submissions per run: a pilot that ends (walltime) ends the run instead of EnTK
# resubmitting the whole workflow to a new pilot.
PILOT_ATTEMPTS = 1
EXIT_CODE = re.compile(r"exit code:\s*(-?\d+)")


def entk_name(spec: TaskSpec) -> str:
    """EnTK names allow only letters, digits and '.': sim-0003 → sim.0003."""
    return f"{spec.role}.{spec.index:04d}"


def build_task(spec: TaskSpec, base_env: dict[str, str] | None = None):
    """An EnTK Task running `spec` in its workdir with stdout/stderr there.

    `base_env` is set before the spec's own environment (e.g. the original TMPDIR)."""
    from radical.entk import Task

    task = Task()
    task.name = entk_name(spec)
    task.executable = spec.executable
    task.arguments = [str(a) for a in spec.arguments]
    task.pre_exec = list(spec.pre_exec)
    task.environment = {str(k): str(v) for k, v in {**(base_env or {}), **spec.environment}.items()}
    task.cpu_reqs = {  # ranks > 1: RP's MPIEXEC launch method (the venv's mpich mpiexec)
        "cpu_processes": spec.ranks,
        "cpu_process_type": "MPI" if spec.ranks > 1 else None,
        "cpu_threads": spec.cpus,
        "cpu_thread_type": None,
    }
    if spec.gpus > 0:
        task.gpu_reqs = {
            "gpu_processes": spec.gpus,
            "gpu_process_type": spec.gpu_type or None,
            "gpu_threads": 1,
            "gpu_thread_type": None,
        }
    task.sandbox = str(spec.workdir.resolve())
    task.stdout = "stdout"
    task.stderr = "stderr"
    return task


def exit_code_of(task) -> int | None:
    """The exit code RADICAL-Pilot put in a failed task's exception detail, if any."""
    match = EXIT_CODE.search(str(task.exception_detail or ""))
    return int(match.group(1)) if match else None


def keep_failed_logs(spec: TaskSpec, attempt: int) -> None:
    """Rename stdout/stderr of a failed attempt so the restart does not overwrite them."""
    for stream in ("stdout", "stderr"):
        path = spec.workdir / stream
        with suppress(OSError):
            path.rename(path.with_name(f"{stream}.{attempt}"))


class Restarter:
    """Builds stages and restarts the failed tasks of a finished stage (its post_exec)."""

    def __init__(
        self,
        plan: TaskPlan,
        max_restarts: int,
        on_event: EventCallback | None,
        base_env: dict[str, str] | None = None,
    ):
        self.plan = plan
        self.base_env = base_env or {}
        self.max_restarts = max_restarts
        self.on_event = on_event or (lambda name, data: None)
        self.restarts = {spec.name: 0 for spec in plan.tasks}
        self.states = {spec.name: "PENDING" for spec in plan.tasks}
        self.by_uid: dict[str, TaskSpec] = {}
        self.lock = threading.Lock()

    def stage(self, specs: list[TaskSpec], pipeline):
        from radical.entk import Stage

        stage = Stage()
        stage.name = f"run.{max(self.restarts[s.name] for s in specs)}"
        for spec in specs:
            task = build_task(spec, self.base_env)
            self.by_uid[task.uid] = spec
            self.states[spec.name] = "SCHEDULED"
            stage.add_tasks(task)
        stage.post_exec = lambda: self.after_stage(stage, pipeline)
        return stage

    def after_stage(self, stage, pipeline) -> None:
        """post_exec: record final states, append a stage with the failed tasks to restart."""
        try:
            with self.lock:
                again = [spec for task in stage.tasks if (spec := self._settle(task))]
            if again:
                pipeline.add_stages(self.stage(again, pipeline))
        except Exception:  # an exception here would kill EnTK's dequeue thread
            logger.exception("post_exec of %s failed", stage.name)

    def _settle(self, task) -> TaskSpec | None:
        """Record how `task` ended; return its spec when it is to run again."""
        spec = self.by_uid[task.uid]
        state, code = str(task.state), exit_code_of(task)
        if state == "DONE":
            self._finish(spec, "DONE", code)
            return None
        attempt = self.restarts[spec.name]
        if attempt >= self.max_restarts or RunDir(self.plan.run_dir).stop_file.exists():
            self._finish(spec, "FAILED", code)
            return None
        self.restarts[spec.name] = attempt + 1
        keep_failed_logs(spec, attempt)
        logger.warning(
            "%s ended %s (exit code %s); restart %d/%d",
            spec.name,
            state,
            code,
            attempt + 1,
            self.max_restarts,
        )
        self.emit(
            "task_restart",
            {
                "task": spec.name,
                "state": state,
                "code": code,
                "restart": attempt + 1,
                "max_restarts": self.max_restarts,
            },
        )
        self.states[spec.name] = "RESTARTING"
        return spec

    def _finish(self, spec: TaskSpec, state: str, code: int | None) -> None:
        self.states[spec.name] = state
        logger.log(
            logging.INFO if state == "DONE" else logging.ERROR,
            "%s ended %s (exit code %s)",
            spec.name,
            state,
            code,
        )
        self.emit(
            "task_exit",
            {"task": spec.name, "state": state, "code": code, "restarts": self.restarts[spec.name]},
        )

    def emit(self, name: str, data: dict) -> None:
        try:
            self.on_event(name, {**data, "time": time.time()})
        except Exception:
            logger.exception("on_event(%s) failed", name)

    def final_states(self) -> dict[str, str]:
        """Final state per task name; tasks that never finished are CANCELED."""
        return {
            name: state if state in ("DONE", "FAILED") else "CANCELED"
            for name, state in self.states.items()
        }


def build_pipelines(plan: TaskPlan, restarter: Restarter, group: Grouping = "task") -> list:
    """One pipeline per task (default) or per role, each starting with one stage."""
    from radical.entk import Pipeline

    if group == "role":
        groups = [(role, specs) for role, specs in plan.by_role().items()]
    else:
        groups = [(entk_name(spec), [spec]) for spec in plan.tasks]
    pipelines = []
    for name, specs in groups:
        pipeline = Pipeline()
        pipeline.name = name
        pipeline.add_stages(restarter.stage(specs, pipeline))
        pipelines.append(pipeline)
    return pipelines


@contextmanager
def radical_session(root: Path, env: dict[str, str]) -> Iterator[None]:
    """Set RADICAL's environment and run from `root` (session dirs land there); restore after."""
    import radical.utils as ru
    import radical.utils.ids as ru_ids

    root.mkdir(parents=True, exist_ok=True)
    env = {**env, "PWD": str(root)}  # RADICAL expands $PWD, which os.chdir does not update
    saved = {key: os.environ.get(key) for key in env}
    saved_cwd, saved_ids = Path.cwd(), ru_ids._BASE
    saved_handlers = list(logging.getLogger().handlers)
    os.environ.update(env)
    os.chdir(root)
    defaults = ru.DefaultConfig()  # a singleton that may predate env
    saved_profile = defaults.get("profile")
    defaults["iface"] = env["RADICAL_DEFAULT_IFACE"]
    defaults["profile"] = env.get("RADICAL_DEFAULT_PROFILE", saved_profile)
    ru_ids._BASE = ru.get_radical_base("utils")  # read at import: $HOME/.radical/utils
    try:
        yield
    finally:
        defaults["profile"] = saved_profile
        ru_ids._BASE = saved_ids
        os.chdir(saved_cwd)
        _restore_root_handlers(saved_handlers)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _restore_root_handlers(handlers: list[logging.Handler]) -> None:
    """Put back the root logger's handlers: closing a RADICAL logger (ru.Logger.close, at the
    end of a session) removes the handlers of all its ancestors, the root's included, and the
    launcher's last log lines (cleanup, "run finished") would go unformatted or unseen."""
    root = logging.getLogger()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)


def make_appmanager(plan: TaskPlan, resources: ResourcesConfig, root: Path):
    from radical.entk import AppManager

    appman = AppManager(
        reattempts=PILOT_ATTEMPTS, resubmit_failed=False, autoterminate=True, base_path=str(root)
    )
    appman.resource_desc = pilot_description(resources, plan)
    throttle_polling(appman)
    if tuning_enabled():
        start_task_manager_early(appman)
        idle_getters()
        radical_patches.install_for("launcher")
    return appman


def run_entk(
    plan: TaskPlan,
    resources: ResourcesConfig,
    max_restarts: int,
    on_event: EventCallback | None = None,
    group: Grouping = "task",
) -> dict[str, str]:
    """Run every task of `plan` at once under EnTK; return the final state per task name."""
    restarter = Restarter(plan, max_restarts, on_event, {"TMPDIR": task_tmpdir()})
    return run_workflow(plan, resources, restarter,
                        lambda: build_pipelines(plan, restarter, group))


def run_workflow(
    plan: TaskPlan,
    resources: ResourcesConfig,
    restarter: Restarter,
    make_pipelines: Callable[[], list],
) -> dict[str, str]:
    """Run the pipelines `make_pipelines()` builds (inside the RADICAL session) in one pilot.

    `restarter` records the tasks' final states (and builds stages); returns them per task name.
    """
    root = radical_root(plan.run_dir.resolve())
    env = write_radical_config(root, resources, plan)
    for spec in plan.tasks:
        spec.workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    try:
        with radical_session(root, env):
            appman = make_appmanager(plan, resources, root)
            appman.workflow = make_pipelines()
            restarter.emit(
                "engine_start",
                {"engine": "entk", "session": appman.sid, "session_dir": str(root / appman.sid)},
            )
            _run(appman, restarter)
    finally:
        killed = kill_leftovers(plan.run_dir)
        if killed:
            logger.warning("killed %d leftover process(es) of the run: %s", len(killed), killed)
    states = restarter.final_states()
    restarter.emit(
        "engine_end", {"engine": "entk", "seconds": time.time() - started, "states": states}
    )
    return states


def _run(appman, restarter: Restarter) -> None:
    """AppManager.run(); an engine failure is logged and reported, tasks stay as they ended."""
    try:
        appman.run()
    except Exception as error:  # EnTKError wraps KeyboardInterrupt, pilot failure, ...
        logger.error("EnTK run failed: %s (logs in %s)", error, Path.cwd() / appman.sid)
        restarter.emit("engine_error", {"engine": "entk", "error": str(error)})
