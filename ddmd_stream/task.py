"""What every task shares: `-c task.yaml`, logging, stop signals, heartbeat and events.

A role's `__main__` is `raise SystemExit(run_task("sim", main))` where `main(ctx)` does the work
and returns when `ctx.should_stop()` says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ddmd_stream.atomic import atomic_write
from ddmd_stream.config import ConfigError, RunConfig, load_config
from ddmd_stream.errors import InputError
from ddmd_stream.events import EventRecorder, read_events
from ddmd_stream.rundir import RunDir
from ddmd_stream.streams.errors import WriterDied
from ddmd_stream.workflow.cleanup import record_process

logger = logging.getLogger(__name__)

# A task's exit status: 2 = bad input (one `error:` line, no traceback); 3 = a runtime fault
# (any other exception, a dead stream writer included: traceback in the task log). 1 stays
# what Python itself exits with on a crash outside run_task; negative: killed by a signal.
EXIT_OK, EXIT_BAD_INPUT, EXIT_RUNTIME_FAULT = 0, 2, 3
# InputErrors that mean a fault at run time inside a task, not bad input
RUNTIME_FAULTS: tuple[type[Exception], ...] = (WriterDied,)
KERAS_BACKEND_VAR = "KERAS_BACKEND"
KERAS_ROLES = ("trainer", "agent")  # the roles that import Keras
# Set by the launcher on GPU tasks when simulations share GPUs: RADICAL-Pilot's ids are slots.
SLOTS_PER_GPU_VAR = "DDMD_GPU_SLOTS_PER_GPU"
VISIBLE_DEVICES_VAR = "CUDA_VISIBLE_DEVICES"


def map_gpu_slots(visible: str, slots_per_gpu: int) -> str:
    """RADICAL-Pilot's GPU slot ids → physical GPU ids: '5' with 4 slots per GPU → '1'."""
    gpus: list[str] = []
    for slot in visible.split(","):
        if slot.strip().isdigit():
            gpu = str(int(slot) // slots_per_gpu)
            if gpu not in gpus:
                gpus.append(gpu)
    return ",".join(gpus) if gpus else visible


def prepare_process_env(
    config: RunConfig, role: str, environ: MutableMapping[str, str]
) -> None:
    """Before any GPU library loads: physical GPU ids and the Keras backend of this task."""
    slots = environ.get(SLOTS_PER_GPU_VAR, "")
    if slots.isdigit() and int(slots) > 1 and environ.get(VISIBLE_DEVICES_VAR):
        environ[VISIBLE_DEVICES_VAR] = map_gpu_slots(environ[VISIBLE_DEVICES_VAR], int(slots))
    if role in KERAS_ROLES:
        environ.setdefault(KERAS_BACKEND_VAR, config.training.backend)


@dataclass(frozen=True)
class TaskFile:
    """The per-task YAML the launcher writes: which task this is and where its run lives."""

    role: str
    index: int
    run_dir: Path
    deadline: float  # time.time() by which the task must have stopped
    members: list[int] = field(default_factory=list)  # e.g. the simulations of an aggregator
    once: bool = False  # sequential mode: one iteration (segment, round, cycle), then exit

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "role": self.role,
            "index": self.index,
            "run_dir": str(self.run_dir),
            "deadline": self.deadline,
            "members": list(self.members),
            "once": self.once,
        }
        atomic_write(path, yaml.safe_dump(data, sort_keys=False), durable=False)

    @classmethod
    def load(cls, path: Path) -> TaskFile:
        try:
            data = yaml.safe_load(Path(path).read_text())
            return cls(
                data["role"],
                int(data["index"]),
                Path(data["run_dir"]),
                float(data["deadline"]),
                [int(m) for m in data.get("members") or []],
                bool(data.get("once", False)),
            )
        except FileNotFoundError:
            raise ConfigError(f"{path}: task file not found") from None
        except (yaml.YAMLError, KeyError, TypeError, ValueError) as error:
            raise ConfigError(
                f"{path}: not a valid task file ({type(error).__name__}: {error})"
            ) from None


class TaskContext:
    """A running task: its config, run directory, logger, events and stop conditions."""

    def __init__(self, task: TaskFile, config: RunConfig):
        self.task = task
        self.config = config
        self.run = RunDir(task.run_dir, config.streams.node_local_path)
        self.name = f"{task.role}-{task.index:04d}"
        self.dir = self.run.task_dir(task.role, task.index)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._use_node_local_tmp()
        self.events = EventRecorder(self.dir / "events.jsonl", self.name)
        self.stop_requested = False
        self._status: dict[str, Any] = {}
        self._last_heartbeat = 0.0

    def _use_node_local_tmp(self) -> None:
        """With node-local storage, the task's temporary files go there too."""
        if self.run.scratch is None:
            return
        tmp = self.run.scratch / "tmp" / self.name
        tmp.mkdir(parents=True, exist_ok=True)
        os.environ["TMPDIR"] = str(tmp)
        tempfile.tempdir = None  # re-read TMPDIR

    @property
    def index(self) -> int:
        return self.task.index

    @property
    def members(self) -> list[int]:
        return self.task.members

    @property
    def once(self) -> bool:
        """Sequential mode: do one iteration of the role's loop, then return."""
        return self.task.once

    def recorded_count(self, event: str) -> int:
        """How many `event` events this task's file holds (sequential: from earlier stages)."""
        return sum(e.get("event") == event for e in read_events(self.events.path))

    def should_stop(self) -> bool:
        """STOP file, deadline or a signal; also beats the heartbeat when it is due."""
        self.heartbeat()
        if self.stop_requested:
            return True
        if time.time() >= self.task.deadline:
            logger.info("deadline reached")
            self.stop_requested = True
        elif self.run.stop_file.exists():
            logger.info("STOP file seen")
            self.stop_requested = True
        return self.stop_requested

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early when a stop condition appears."""
        end = time.monotonic() + seconds
        while not self.should_stop() and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.25))

    def update_status(self, **status: Any) -> None:
        self._status.update(status)

    def heartbeat(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_heartbeat < self.config.workflow.heartbeat_s:
            return
        self._last_heartbeat = now
        record = {"task": self.name, "pid": os.getpid(), "time": now, **self._status}
        try:  # atomic, not fsynced: rewritten every heartbeat
            atomic_write(self.dir / "status.json", json.dumps(record, default=str), durable=False)
        except OSError as error:
            logger.error("cannot write heartbeat in %s: %s", self.dir, error)
        self.events.flush()


def _setup_logging(log_file: Path) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    with contextlib.suppress(OSError):  # unwritable task dir: log to stderr only
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(
        level=os.environ.get("DDMD_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing chatter


def _lower_priority(increment: int) -> None:
    """`resources.<role>.nice`: yield CPU to the other tasks of the run."""
    if increment:
        logger.info("CPU priority lowered by %d (nice %d)", increment, os.nice(increment))


def _install_signal_handlers(ctx: TaskContext) -> None:
    def request_stop(signum: int, _frame: object) -> None:
        logger.info("signal %s: stopping", signal.Signals(signum).name)
        ctx.stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


def open_context(role: str, task_path: Path) -> TaskContext:
    task = TaskFile.load(task_path)
    if task.role != role:
        raise ConfigError(f"{task_path}: task file is for role {task.role!r}, not {role!r}")
    config = load_config(RunDir(task.run_dir).config_file)
    return TaskContext(task, config)


def run_task(role: str, main: Callable[[TaskContext], None], argv: list[str] | None = None) -> int:
    """Parse `-c TASK.yaml`, set up the task, run `main(ctx)`; its exit status (EXIT_*):
    one clear line on bad input, the traceback in the task log on a runtime fault."""
    parser = argparse.ArgumentParser(prog=f"python -m ddmd_stream.{role}")
    parser.add_argument(
        "-c", "--config", type=Path, required=True, help="task YAML written by the launcher"
    )
    args = parser.parse_args(argv)
    try:
        ctx = open_context(role, args.config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    record_process(ctx.dir, os.getpid())  # cleanup stops only what the run recorded
    prepare_process_env(ctx.config, role, os.environ)
    _setup_logging(ctx.dir / "log")
    _lower_priority(getattr(ctx.config.resources, role).nice)
    _install_signal_handlers(ctx)
    ctx.events.event("task_start", role=role, pid=os.getpid())
    code = EXIT_OK
    try:
        main(ctx)
    except RUNTIME_FAULTS:
        logger.exception("task failed (runtime fault)")
        code = EXIT_RUNTIME_FAULT
    except InputError as error:
        logger.error("%s", error)
        code = EXIT_BAD_INPUT
    except Exception:
        logger.exception("task failed (runtime fault)")
        code = EXIT_RUNTIME_FAULT
    finally:
        ctx.events.event("task_end", code=code)
        ctx.heartbeat(force=True)
        ctx.events.close()
    return code
