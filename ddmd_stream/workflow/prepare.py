"""Turn a validated config into a run directory and a task plan (no task is started here)."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path

from ddmd_stream.config import (
    ConfigError,
    RoleResources,
    RunConfig,
    save_config,
)
from ddmd_stream.events import record_job
from ddmd_stream.parallel import mpiexec_beside
from ddmd_stream.rundir import RunDir
from ddmd_stream.streams import clean_stale_contact_files
from ddmd_stream.task import KERAS_BACKEND_VAR, KERAS_ROLES, SLOTS_PER_GPU_VAR, TaskFile
from ddmd_stream.workflow.mps import sim_task_settings
from ddmd_stream.workflow.plan import TaskPlan, TaskSpec

logger = logging.getLogger(__name__)

MODULES = {
    "sim": "ddmd_stream.sim",
    "aggregator": "ddmd_stream.aggregate",
    "trainer": "ddmd_stream.train",
    "agent": "ddmd_stream.agent",
}


def assign_simulations(num_simulations: int, num_aggregators: int) -> list[list[int]]:
    """Simulation ids of each aggregator, round robin."""
    return [list(range(j, num_simulations, num_aggregators)) for j in range(num_aggregators)]


def run_dir_in_use(run: RunDir) -> bool:
    return run.config_file.exists()


def prepare_run_dir(config: RunConfig) -> RunDir:
    """Create (or reuse, per `workflow.on_existing`) the run directory; copy config and XML in."""
    run = RunDir(config.workflow.run_dir, config.streams.node_local_path)
    policy = config.workflow.on_existing
    if run_dir_in_use(run):
        if policy == "refuse":
            raise ConfigError(
                f"{run.root}: already holds a run; set workflow.on_existing to resume or overwrite "
                "(or use --resume / --overwrite), or choose another workflow.run_dir"
            )
        if policy == "overwrite":
            if not run.marker_file.is_file():
                raise ConfigError(
                    f"{run.root}: holds a config.yaml but no {run.marker_file.name}, so it was "
                    "not made by ddmd_stream; not deleting it (workflow.on_existing: "
                    "overwrite); choose another workflow.run_dir")
            logger.warning("overwriting the run in %s", run.root)
            shutil.rmtree(run.root)
            if run.scratch:
                shutil.rmtree(run.sst_dir, ignore_errors=True)
    run.create()
    run.stop_file.unlink(missing_ok=True)  # a STOP left from an earlier run must not stop this one
    clean_stale_contact_files(run.sst_dir)
    shutil.copyfile(config.streams.adios_xml, run.adios_xml)
    resolved = config.model_copy(deep=True)
    object.__setattr__(resolved.streams, "adios_xml", run.adios_xml)
    object.__setattr__(resolved.workflow, "run_dir", run.root)
    save_config(resolved, run.config_file)
    return run


def plan_tasks(config: RunConfig, run: RunDir, deadline: float, write: bool = True) -> TaskPlan:
    """Every task of the run (aggregators first, so simulations find their reader).

    With `write`, each task's YAML is written into the run directory. `workflow.mode` picks
    the roles: streaming all four; plain no trainer/agent; sequential no aggregators (each
    simulation writes its own store) and every task does one iteration per stage (`once`).
    """
    mode = config.workflow.mode
    groups = [] if mode == "sequential" else assign_simulations(
        config.simulation.num_simulations, config.aggregation.num_aggregators
    )
    wanted: list[tuple[str, int, list[int]]] = [
        *(("aggregator", j, members) for j, members in enumerate(groups)),
        *(("sim", i, []) for i in range(config.simulation.num_simulations)),
        *((("trainer", 0, []), ("agent", 0, [])) if mode != "plain" else ()),
    ]
    tasks = []
    for role, index, members in wanted:
        task_file = run.task_file(role, index)
        if write:
            TaskFile(role, index, run.root, deadline, members, mode == "sequential").save(task_file)
        tasks.append(task_spec(config, run, role, index, task_file))
    return TaskPlan(tasks, run.root)


def role_environment(config: RunConfig, run: RunDir, role: str) -> tuple[dict[str, str], list[str]]:
    """(environment, pre_exec lines) that ddmd_stream itself adds to a role's tasks."""
    resources = config.resources
    env: dict[str, str] = {}
    pre_exec: list[str] = []
    if role in KERAS_ROLES:
        env[KERAS_BACKEND_VAR] = config.training.backend
    if getattr(resources, role).gpus and resources.simulations_per_gpu > 1:
        env[SLOTS_PER_GPU_VAR] = str(resources.simulations_per_gpu)
    if role == "sim":
        mps_env, pre_exec = sim_task_settings(resources, run)
        env.update(mps_env)
    return env, pre_exec


def mpi_command(python: str, ranks: int, arguments: list[str]) -> tuple[str, list[str]]:
    """(executable, arguments) starting `python arguments` as `ranks` MPI ranks: the local
    engine's way (EnTK's pilot launches MPI tasks itself, from `TaskSpec.ranks`)."""
    mpiexec = mpiexec_beside(python)
    if mpiexec is None:
        raise ConfigError(
            f"resources.agent.ranks: {ranks} needs an mpiexec beside {python} or on PATH "
            "(pip install mpich into that environment), or set ranks: 1")
    return mpiexec, ["-n", str(ranks), python, *arguments]


def task_spec(
    config: RunConfig, run: RunDir, role: str, index: int, task_file: Path
) -> TaskSpec:
    """The command line and requests of one task, with the role's launch settings.

    GPU requests are in slots: with `simulations_per_gpu` N > 1 a simulation takes one slot
    (1/N GPU) and another role's GPU is N slots; RADICAL-Pilot then hands out slot ids that
    the task maps back to physical GPUs (`task.map_gpu_slots`)."""
    resources = config.resources
    settings: RoleResources = getattr(resources, role)
    slots = settings.gpus if role == "sim" else settings.gpus * resources.simulations_per_gpu
    env, pre_exec = role_environment(config, run, role)
    ranks = getattr(settings, "ranks", 1)  # only the agent has ranks
    executable = settings.python or sys.executable
    arguments = ["-m", MODULES[role], "-c", str(task_file)]
    if ranks > 1 and config.workflow.engine == "local":
        executable, arguments = mpi_command(executable, ranks, arguments)
    return TaskSpec(
        role=role,
        index=index,
        executable=executable,
        arguments=arguments,
        workdir=task_file.parent,
        cpus=settings.cpus,
        gpus=slots,
        gpu_type="CUDA" if slots else "",  # RP then sets CUDA_VISIBLE_DEVICES (HIP honours it)
        ranks=ranks,
        pre_exec=[*resources.pre_exec, *settings.pre_exec, *pre_exec],
        environment={**env, **resources.environment, **settings.environment},
    )


def prepare(config: RunConfig, start: float | None = None) -> TaskPlan:
    """Run directory + plan for `config`; tasks must stop by start + workflow.duration_s."""
    try:
        run = prepare_run_dir(config)
    except OSError as error:
        raise ConfigError(
            f"workflow.run_dir: cannot set up {config.workflow.run_dir}: {error.strerror or error} "
            f"({error.filename or ''}); choose a writable folder with free space"
        ) from None
    start = start or time.time()
    record_job(run.jobs_file, start, config.workflow.on_existing)
    return plan_tasks(config, run, start + config.workflow.duration_s)


def preview_plan(config: RunConfig) -> TaskPlan:
    """The plan `prepare` would make, without touching the disk."""
    run = RunDir(config.workflow.run_dir, config.streams.node_local_path)
    return plan_tasks(config, run, time.time() + config.workflow.duration_s, write=False)
