"""RADICAL resource settings for a run: pilot description, user resource config, environment.

Everything RADICAL writes goes under `RUN/radical/` (see `radical_root`):

- `RUN/radical/.radical/pilot/configs/resource_<site>.json`: our override of the resource
  config (`RADICAL_CONFIG_USER_DIR=RUN/radical`); it moves the pilot sandbox into the run
  directory and, on `local.localhost`, sizes the fake node so that all tasks run at once.
- `RUN/radical/.radical/utils/`: ID counters and the NTP cache (`RADICAL_BASE=RUN/radical`).
- `RUN/radical/<session id>/`: EnTK and RADICAL-Pilot client logs (the engine runs from there).
- `RUN/radical/radical.pilot.sandbox/<session id>/pilot.0000/`: the pilot agent's sandbox.
- `RUN/radical/tmp/` (local runs): RADICAL's temp files (`TMPDIR`; tasks keep the original).
- `RUN/radical/lfs/` (local runs): node-local scratch of the fake node.

Start-up and CPU settings (`tuning_enabled`; docs/scaling.md "RADICAL start-up"): RADICAL's
profilers are off unless `RADICAL_PROFILE` is set, and a local pilot's agent starts without the
bridges nothing in RADICAL-Pilot 1.103 reads (`agent_config`): every bridge is a process of its
own, started one after another (~0.45 s each) and polling every 10 ms.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from ddmd_stream.config import ResourcesConfig
from ddmd_stream.workflow.plan import TaskPlan

logger = logging.getLogger(__name__)

RADICAL_DIR = "radical"
SANDBOX_DIR = "radical.pilot.sandbox"
# An NTP cache stamped far in the future never expires and adds no offset (radical.utils
# profile._sync_ntp); without it every profiler asks 0.pool.ntp.org for the time.
NTP_CACHE = "9999999999.0\n9999999999.0\n"
LOOPBACK_HOST = "127.0.0.1"
# `DDMD_RADICAL_TUNING=0` turns the start-up and CPU settings off (benchmarks/startup.py --compare)
TUNING_ENV = "DDMD_RADICAL_TUNING"
# sitecustomize for RADICAL's processes (patches_env)
RADICAL_SITE = Path(__file__).resolve().parents[1] / "data" / "radical_site"
# Agent bridges of RADICAL-Pilot 1.103's agent_default.json that no agent code opens: raptor's
# queue (we run no raptor tasks) and the client channels (the agent talks to the client through
# the session's proxy queues).
UNUSED_AGENT_BRIDGES = ("raptor_scheduling_queue", "client_pubsub", "client_queue")
AGENT_CONFIG = "ddmd_stream"  # RUN/radical/.radical/pilot/configs/agent_ddmd_stream.json


def radical_root(run_dir: Path) -> Path:
    """Where RADICAL's configs, session logs and sandboxes go for a run."""
    return run_dir / RADICAL_DIR


def is_local(resources: ResourcesConfig) -> bool:
    return resources.is_local


def split_label(resource: str) -> tuple[str, str]:
    """'ornl.summit' → ('ornl', 'summit'): the config file suffix and the key inside it."""
    site, _, name = resource.partition(".")
    return site, name


def local_cores(resources: ResourcesConfig, plan: TaskPlan) -> int:
    """Cores of the fake local node: enough for every task of the plan at once."""
    return max(resources.cores_per_node or 0, plan.total_cpus, 1)


def gpu_slots_per_node(resources: ResourcesConfig) -> int:
    """GPUs per node as RADICAL counts them: `simulations_per_gpu` slots per physical GPU.

    RADICAL-Pilot 1.103 takes fractional GPU requests but marks the whole GPU busy for the
    first one (agent/scheduler/base.py `_change_slot_states`), so GPUs are shared through
    virtual slots instead (docs/gpu.md)."""
    return resources.gpus_per_node * resources.simulations_per_gpu


def local_gpus(resources: ResourcesConfig, plan: TaskPlan) -> int:
    """GPU slots of the fake local node (virtual when several tasks share one GPU)."""
    return max(gpu_slots_per_node(resources), plan.total_gpus)


def tuning_enabled() -> bool:
    """Whether our RADICAL start-up and CPU settings apply (default; `DDMD_RADICAL_TUNING=0`
    turns them off to measure what they bring)."""
    return os.environ.get(TUNING_ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def agent_config() -> dict:
    """RADICAL-Pilot's default agent config without the bridges nothing reads.

    Read from the installed RADICAL-Pilot (so its components and settings stay its own) and
    written as `agent_<AGENT_CONFIG>.json` beside the resource override, which names it (an
    inline dict would be turned into a string by RADICAL-Pilot's ResourceConfig)."""
    import radical.utils as ru

    config = ru.Config("radical.pilot", category="agent", name="default").as_dict()
    for bridge in UNUSED_AGENT_BRIDGES:
        config.get("bridges", {}).pop(bridge, None)
    return config


def local_resource_json(cores: int, gpus: int, sandbox: Path | None = None) -> dict:
    """User override of RADICAL's `local.localhost` (merged over the packaged one).

    With `sandbox`, the pilot sandbox and the node-local scratch (`lfs`, /tmp by default,
    where RADICAL makes an empty `<session id>` folder) move under it. With tuning on
    (`tuning_enabled`), the agent starts with the lighter `agent_config`.
    """
    entry: dict = {"cores_per_node": cores, "gpus_per_node": gpus, "fake_resources": True}
    if sandbox is not None:
        entry["default_remote_workdir"] = str(sandbox)
        entry["lfs_path_per_node"] = str(sandbox / "lfs")
    if tuning_enabled():
        entry["agent_config"] = AGENT_CONFIG
    entry["launch_methods"] = local_launch_methods()
    return {"localhost": entry}


def local_launch_methods() -> dict:
    """FORK, and MPIEXEC for MPI tasks (a multi-rank agent) with this environment's `bin` on
    PATH: RADICAL-Pilot looks for mpiexec in the pilot's original environment, which lacks an
    unactivated venv's `bin`, where the `mpich` wheel puts it (else the MPI task fails with
    "no attribute _mpi_flavor")."""
    bindir = Path(sys.executable).parent
    return {"order": ["FORK", "MPIEXEC"], "FORK": {},
            "MPIEXEC": {"pre_exec_cached": [f"export PATH={bindir}:$PATH"]}}


def resource_override(resources: ResourcesConfig, plan: TaskPlan, sandbox: Path) -> dict:
    """The user resource config for the pilot's resource (site file content)."""
    if is_local(resources):
        cores, gpus = local_cores(resources, plan), local_gpus(resources, plan)
        return local_resource_json(cores, gpus, sandbox)
    # HPC: RADICAL's own node layout (SMT, blocked cores) stays; only the sandbox moves
    _, name = split_label(resources.resource)
    entry: dict = {"default_remote_workdir": str(sandbox)}
    if resources.simulations_per_gpu > 1:
        entry["gpus_per_node"] = gpu_slots_per_node(resources)
    return {name: entry}


def radical_env(root: Path, resources: ResourcesConfig) -> dict[str, str]:
    """RADICAL environment for a run rooted at `root` (see the module doc)."""
    env = {
        "RADICAL_CONFIG_USER_DIR": str(root),
        "RADICAL_BASE": str(root),
        "RADICAL_DEFAULT_IFACE": resources.network_interface,
        "RADICAL_UTILS_NTPHOST": LOOPBACK_HOST,
        "RADICAL_PILOT_BASE": str(root),  # session dirs (default: $PWD, not os.getcwd())
        "RADICAL_PILOT_SESSION_BASE": str(root),
        "RADICAL_DEFAULT_LOG_DIR": str(root),
        "RADICAL_DEFAULT_REPORT_DIR": str(root),
        "RADICAL_DEFAULT_PROFILE_DIR": str(root),
        "RADICAL_REPORT": "FALSE",  # no progress bars on stderr; logs stay in the session dir
    }
    if is_local(resources):
        # the client's rp.agent_cfg.* files and the agent's empty $TMPDIR/<session id> folder;
        # tasks get the original TMPDIR back (see task_tmpdir)
        env["TMPDIR"] = str(root / "tmp")
    if tuning_enabled():
        env.update(profiling_env())
        env.update(patches_env())
    env.update(python_env())
    return env


def patches_env() -> dict[str, str]:
    """`PYTHONPATH` with the folder whose `sitecustomize` patches RADICAL's own processes
    (workflow/radical_patches.py); other processes only pass through it."""
    path = [str(RADICAL_SITE), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(p for p in path if p))}


def profiling_env() -> dict[str, str]:
    """RADICAL's profilers off, unless the user asked for them with `RADICAL_PROFILE`.

    The default switch (`RADICAL_DEFAULT_PROFILE`) is used, not `RADICAL_PROFILE=False`: EnTK
    copies all profiles at session close whenever `RADICAL_PROFILE` is set, whatever its value
    (execman/rp/resource_manager.py `_terminate_resource_request`)."""
    if "RADICAL_PROFILE" in os.environ:
        return {}
    return {"RADICAL_DEFAULT_PROFILE": "FALSE"}


def task_tmpdir() -> str:
    """The temp folder tasks should see: this process's, before RADICAL's env is set."""
    return os.environ.get("TMPDIR") or tempfile.gettempdir()


def python_env() -> dict[str, str]:
    """Make the pilot find this interpreter's `radical-pilot-agent_0` and packages.

    RADICAL-Pilot's local launcher uses `$VIRTUAL_ENV` when set, else plain `python3` from
    `$PATH`; a venv interpreter run without activation would start an agent that is not found.
    """
    if sys.prefix == sys.base_prefix:
        return {}
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if bindir not in path.split(os.pathsep):
        path = os.pathsep.join([bindir, path]) if path else bindir
    return {"VIRTUAL_ENV": sys.prefix, "PATH": path}


def write_radical_config(
    config_root: Path, resources: ResourcesConfig, plan: TaskPlan
) -> dict[str, str]:
    """Write RADICAL's user config under `config_root`; return the env vars to set."""
    config_root = config_root.resolve()
    sandbox = config_root  # RP appends radical.pilot.sandbox/<sid>/pilot.NNNN
    site, _ = split_label(resources.resource)
    configs = config_root / ".radical" / "pilot" / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    target = configs / f"resource_{site}.json"
    target.write_text(json.dumps(resource_override(resources, plan, sandbox), indent=2) + "\n")
    if is_local(resources) and tuning_enabled():
        agent = configs / f"agent_{AGENT_CONFIG}.json"
        agent.write_text(json.dumps(agent_config(), indent=2) + "\n")
    for base in (config_root, config_root / SANDBOX_DIR):  # client and agent RADICAL_BASE
        cache = base / ".radical" / "utils" / "ntp.cache"
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(NTP_CACHE)
    (config_root / "tmp").mkdir(exist_ok=True)
    logger.debug("wrote %s", target)
    return radical_env(config_root, resources)


def pilot_cpus(resources: ResourcesConfig, plan: TaskPlan) -> int:
    """Cores to ask for. On HPC, cores_per_node must be what RADICAL counts per node
    (cores × SMT - blocked cores), so that the pilot gets exactly `nodes` nodes."""
    if is_local(resources):
        return local_cores(resources, plan) * resources.nodes
    if resources.cores_per_node:
        return resources.cores_per_node * resources.nodes
    return plan.total_cpus


def pilot_gpus(resources: ResourcesConfig, plan: TaskPlan) -> int:
    if is_local(resources):
        return local_gpus(resources, plan) * resources.nodes
    if resources.gpus_per_node:
        return gpu_slots_per_node(resources) * resources.nodes
    return plan.total_gpus


def pilot_description(resources: ResourcesConfig, plan: TaskPlan) -> dict:
    """`AppManager.resource_desc` for the plan (EnTK wants ints for walltime/cpus/gpus)."""
    desc: dict = {
        "resource": resources.resource,
        "walltime": int(resources.walltime_min),
        "cpus": pilot_cpus(resources, plan),
        "gpus": pilot_gpus(resources, plan),
        "access_schema": resources.access_schema,
        "job_name": "ddmd_stream",
    }
    if resources.project:
        desc["project"] = resources.project
    if resources.queue:
        desc["queue"] = resources.queue
    return desc


def check_resources(resources: ResourcesConfig, plan: TaskPlan) -> list[str]:
    """Problems with the resources section for this plan; empty when it fits."""
    if is_local(resources):
        return _check_local(resources, plan)
    return _check_hpc(resources, plan)


def _check_local(resources: ResourcesConfig, plan: TaskPlan) -> list[str]:
    problems = []
    if resources.network_interface != "lo":
        problems.append(
            "resources.network_interface: local runs keep RADICAL traffic on loopback; "
            f"use lo (got {resources.network_interface!r})"
        )
    if resources.access_schema != "local":
        problems.append(
            f"resources.access_schema: {resources.resource} needs 'local' "
            f"(got {resources.access_schema!r})"
        )
    return problems


def known_resources() -> set[str]:
    """Every SITE.MACHINE label that the installed RADICAL-Pilot has a config for."""
    import radical.pilot as rp
    import radical.utils as ru

    labels = set()
    for path in sorted((Path(rp.__file__).parent / "configs").glob("resource_*.json")):
        site = path.stem.removeprefix("resource_")
        labels.update(f"{site}.{machine}" for machine in ru.read_json(str(path)))
    return labels


def _check_hpc(resources: ResourcesConfig, plan: TaskPlan) -> list[str]:
    problems = []
    label = resources.resource
    if label not in known_resources():
        problems.append(
            f"resources.resource: RADICAL-Pilot knows no resource {label!r} "
            "(see radical/pilot/configs/resource_*.json, e.g. ornl.summit)"
        )
    if "." not in label:
        problems.append(
            f"resources.resource: expected SITE.MACHINE like ornl.summit (got {label!r})"
        )
    if not resources.project or resources.project.startswith("<"):
        problems.append(
            f"resources.project: {label} needs the allocation to charge (set your project)"
        )
    if resources.cores_per_node is None:
        problems.append(f"resources.cores_per_node: set the usable cores per node of {label}")
    elif plan.total_cpus > resources.nodes * resources.cores_per_node:
        problems.append(
            f"resources: the plan needs {plan.total_cpus} cores but "
            f"nodes × cores_per_node is {resources.nodes * resources.cores_per_node}; "
            "add nodes"
        )
    slots, per_gpu = resources.nodes * gpu_slots_per_node(resources), resources.simulations_per_gpu
    if plan.total_gpus > slots:
        unit = "GPUs" if per_gpu == 1 else f"GPU slots ({per_gpu} per GPU)"
        problems.append(
            f"resources: the plan needs {plan.total_gpus} {unit} but "
            f"nodes × gpus_per_node × simulations_per_gpu is {slots}; "
            "add nodes, raise simulations_per_gpu or lower resources.sim/trainer/agent gpus"
        )
    if resources.network_interface == "lo":
        problems.append(
            f"resources.network_interface: lo cannot reach {label}'s compute nodes; "
            "name the high-speed interface (e.g. ib0, hsn0)"
        )
    return problems
