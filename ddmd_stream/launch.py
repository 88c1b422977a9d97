"""`python -m ddmd_stream.launch config.yaml [--check | --dry-run]`: run the whole workflow.

Builds the run directory and the task plan, starts the four roles as concurrent tasks
(RADICAL-EnTK by default), shows progress, stops on wall time / target / STOP / Ctrl-C, and
cleans up anything left behind. `workflow.mode: sequential` runs them in repeating stages
instead (workflow/sequential.py); `plain` runs simulations and aggregators only.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from ddmd_stream.config import RunConfig, check_inputs, load_config
from ddmd_stream.errors import InputError
from ddmd_stream.rundir import RunDir
from ddmd_stream.streams import engine_parameters, engine_type, is_file_engine, validate_xml
from ddmd_stream.workflow.plan import TaskPlan

if TYPE_CHECKING:
    from ddmd_stream.workflow.escalate import StopEscalation

logger = logging.getLogger("ddmd_stream.launch")

LOOPBACK_ENV = {"ADIOS2_IP": "127.0.0.1", "RADICAL_DEFAULT_IFACE": "lo"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ddmd_stream.launch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", type=Path, help="run configuration (YAML)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="validate everything and exit")
    mode.add_argument("--dry-run", action="store_true", help="print the task plan and exit")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument(
        "--resume", action="store_true", help="continue in an existing run directory"
    )
    existing.add_argument(
        "--overwrite", action="store_true", help="replace an existing run directory"
    )
    parser.add_argument("--engine", choices=["entk", "local"], help="override workflow.engine")
    parser.add_argument("--run-dir", type=Path, help="override workflow.run_dir")
    parser.add_argument("--duration", type=float, help="override workflow.duration_s (seconds)")
    return parser.parse_args(argv)


def apply_overrides(config: RunConfig, args: argparse.Namespace) -> RunConfig:
    if args.engine:
        config.workflow.engine = args.engine
    if args.run_dir:
        config.workflow.run_dir = args.run_dir.resolve()
    if args.duration:
        config.workflow.duration_s = args.duration
    if args.resume:
        config.workflow.on_existing = "resume"
    if args.overwrite:
        config.workflow.on_existing = "overwrite"
    return config


def check_everything(config: RunConfig, plan: TaskPlan | None = None) -> list[str]:
    """Every problem found in the config's inputs: files, PDBs, XML, resources."""
    problems = check_inputs(config)
    streams = config.streams
    xml_problem = validate_xml(streams.adios_xml, [streams.simulation_io, streams.aggregator_io])
    if xml_problem:
        problems.append(f"streams.adios_xml: {xml_problem}")
    else:
        problems.extend(_check_loopback(config))
        problems.extend(_check_sequential_store(config))
    if not problems:
        problems.extend(_check_structures(config))
    from ddmd_stream.workflow.mps import check_mps
    from ddmd_stream.workflow.resources import check_resources

    problems.extend(check_resources(config.resources, plan or _preview_plan(config)))
    problems.extend(check_mps(config.resources, RunDir(config.workflow.run_dir)))
    return problems


def _check_loopback(config: RunConfig) -> list[str]:
    """A local run must keep SST on loopback (nothing else is reachable, nothing else allowed)."""
    if not config.resources.is_local:
        return []
    streams = config.streams
    problems = []
    for io_name in (streams.simulation_io, streams.aggregator_io):
        for key, value in engine_parameters(streams.adios_xml, io_name).items():
            if (
                key.lower() in ("networkinterface", "controlinterface", "datainterface")
                and value != "lo"
            ):
                problems.append(
                    f"streams.adios_xml: {streams.adios_xml}: {io_name} {key}={value}; "
                    "a local run keeps traffic on loopback: set it to lo"
                )
    return problems


def _check_sequential_store(config: RunConfig) -> list[str]:
    """Sequential mode: simulations write their stores with the aggregator IO, which must be a
    file engine (there is no reader while they run)."""
    streams = config.streams
    if config.workflow.mode != "sequential":
        return []
    engine = engine_type(streams.adios_xml, streams.aggregator_io)
    if is_file_engine(engine):
        return []
    return [f"streams.adios_xml: {streams.adios_xml}: {streams.aggregator_io} uses {engine}; "
            "workflow.mode sequential writes stores with it: use a file engine (BP5, BP4)"]


def _check_structures(config: RunConfig) -> list[str]:
    from ddmd_stream.md.system import check_simulation_inputs
    from ddmd_stream.ml.base import model_kind

    return check_simulation_inputs(config.simulation, check_platform=config.resources.is_local,
                                   input_field=model_kind(config.training.model).input_field)


def _preview_plan(config: RunConfig) -> TaskPlan:
    """The plan without touching the run directory (task files are not written)."""
    from ddmd_stream.workflow.prepare import preview_plan

    return preview_plan(config)


def print_plan(plan: TaskPlan, config: RunConfig) -> None:
    run = RunDir(plan.run_dir, config.streams.node_local_path)
    print(f"run directory : {run.root}")
    print(f"mode          : {config.workflow.mode}")
    print(f"engine        : {config.workflow.engine} on {config.resources.resource}")
    print(
        f"ADIOS XML     : {config.streams.adios_xml} ({config.streams.simulation_io} → "
        f"{config.streams.aggregator_io})"
    )
    print(f"tasks         : {len(plan.tasks)} ({plan.total_cpus} cores, {plan.total_gpus} GPUs)")
    print(f"GPU sharing   : {gpu_sharing_line(config, run)}")
    for task in plan.tasks:
        members = ""
        if task.role == "aggregator":
            store = run.aggregator_store(task.index)
            members = f" → {store}"
        print(
            f"  {task.name:16s} cpus={task.cpus} gpus={task.gpus}  "
            f"{task.executable} {' '.join(task.arguments)}{members}"
        )
        for line in task.pre_exec:
            print(f"  {'':16s} pre_exec: {line}")
        for key, value in task.environment.items():
            print(f"  {'':16s} env: {key}={value}")


def gpu_sharing_line(config: RunConfig, run: RunDir) -> str:
    """How simulations share GPUs, in one line for --dry-run."""
    from ddmd_stream.workflow.mps import launcher_starts_daemon, start_command

    resources = config.resources
    line = f"{resources.simulations_per_gpu} simulation(s) per GPU"
    if launcher_starts_daemon(resources):
        return f"{line}; MPS: the launcher runs {' '.join(start_command())} in {run.mps_dir}"
    if resources.mps_enabled:
        return f"{line}; MPS: one daemon per node, started by the simulations' pre_exec"
    return f"{line}; MPS off"


def _on_stop_signals(act: Callable[[str], None]) -> None:
    """Call `act(signal name)` on SIGINT or SIGTERM (instead of raising or dying)."""

    def on_signal(signum: int, _frame: object) -> None:
        act(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def execute(config: RunConfig) -> int:
    from ddmd_stream.workflow.cleanup import kill_leftovers
    from ddmd_stream.workflow.escalate import StopEscalation
    from ddmd_stream.workflow.mps import MpsDaemon, launcher_starts_daemon
    from ddmd_stream.workflow.prepare import prepare
    from ddmd_stream.workflow.progress import Monitor

    if config.resources.is_local:
        os.environ.update(LOOPBACK_ENV)  # every socket of a local run stays on loopback
    started = time.time()
    early: list[str] = []  # a signal while preparing: honoured once the run directory is whole
    _on_stop_signals(early.append)
    plan = prepare(config, started)
    run = RunDir(plan.run_dir, config.streams.node_local_path)
    deadline = started + config.workflow.duration_s
    escalation = StopEscalation(run, config.workflow.stop_grace_s)
    signals: list[str] = []
    _on_stop_signals(lambda name: _stop_on_signal(run, escalation, signals, name))
    if early:
        return _stopped_while_preparing(run, early[0])
    monitor = Monitor(run, config, started, deadline)
    monitor.start()
    escalation.start()
    logger.info(
        "run directory %s: %d tasks on %s", run.root, len(plan.tasks), config.workflow.engine
    )
    mps = MpsDaemon(run) if launcher_starts_daemon(config.resources) else nullcontext()
    try:
        with mps:  # the daemon stops on every way out, before the leftovers are killed
            states = run_engine(config, plan, deadline)
    finally:
        escalation.finish()
        monitor.stop()
        killed = kill_leftovers(run.root)
        if killed:
            logger.warning("killed %d leftover process(es): %s", len(killed), killed)
    failed = {name: state for name, state in states.items() if state != "DONE"}
    logger.info(
        "run finished in %.0f s; %s",
        time.time() - started,
        f"tasks not done: {failed}" if failed else "all tasks done",
    )
    return 1 if failed else 0


def _stop_on_signal(
    run: RunDir, escalation: StopEscalation, signals: list[str], name: str
) -> None:
    """First SIGINT/SIGTERM: write STOP (the tasks get workflow.stop_grace_s); a second one:
    stop the tasks now."""
    from ddmd_stream.workflow.progress import request_stop

    signals.append(name)
    if len(signals) > 1:
        logger.warning("signal %s again: stopping the tasks now", name)
        escalation.force()
        return
    request_stop(run, f"signal {name}")
    logger.warning("signal %s: tasks get %.0f s to stop; send it again to stop them now",
                   name, escalation.grace_s)


def _stopped_while_preparing(run: RunDir, name: str) -> int:
    from ddmd_stream.workflow.progress import request_stop

    request_stop(run, f"signal {name} while preparing")
    logger.warning("stopped by %s before any task started; %s is prepared", name, run.root)
    return 128 + signal.Signals[name].value  # as a shell reports death by signal


def run_engine(config: RunConfig, plan: TaskPlan, deadline: float) -> dict[str, str]:
    restarts = config.workflow.max_task_restarts

    def on_event(name: str, data: dict) -> None:
        logger.info("%s %s", name, data)

    if config.workflow.mode == "sequential":
        from ddmd_stream.workflow.sequential import run_sequential

        return run_sequential(plan, config, deadline, on_event)
    if config.workflow.engine == "local":
        from ddmd_stream.workflow.local import run_local

        return run_local(plan, restarts, on_event)
    from ddmd_stream.workflow.entk import run_entk

    return run_entk(plan, config.resources, restarts, on_event)


def configure_logging() -> None:
    """The launcher's root handlers. radical.utils is imported first: at import it makes
    logging's locks fork-safe, and warns "Import `radical` modules before `logging`" when root
    handlers (whose locks it can no longer cover) exist already."""
    import radical.utils  # noqa: F401

    logging.basicConfig(
        level=os.environ.get("DDMD_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    try:
        config = apply_overrides(load_config(args.config), args)
        problems = check_everything(config)
        if args.dry_run:
            print_plan(_preview_plan(config), config)
        for problem in problems:
            print(f"error: {args.config}: {problem}", file=sys.stderr)
        if problems:
            return 2
        if args.check or args.dry_run:
            print(f"{args.config}: OK")
            return 0
        return execute(config)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while checking the inputs: nothing was started
        print("interrupted before the run started", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
