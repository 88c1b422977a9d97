"""What the report reads from a run directory: events, config, stored frames, store sizes.

Everything here tolerates a run that is still going: torn last lines, missing stores, missing
or broken config. What is missing is said in `RunData.notes`, never raised (except a folder
that is no run directory at all: `ReportError`). The event helpers at the end (task lives,
spans per role) are how the other report modules look at events.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ddmd_stream.errors import InputError
from ddmd_stream.events import read_jobs, read_run_events
from ddmd_stream.frames import RMSD, SIM_ID
from ddmd_stream.rundir import ROLES, RunDir

logger = logging.getLogger(__name__)

Event = dict[str, Any]
Frames = dict[str, np.ndarray]

# the report's own per-frame field: wall time (time.time) at which the frame was stored
WALL = "wall"


class ReportError(InputError):
    """The report cannot be made from this folder."""


@dataclass
class RunData:
    """Everything the report reads from one run directory."""

    run: RunDir
    events: list[Event]
    config: Any = None  # RunConfig, or None when config.yaml is missing or broken
    frames: Frames = field(default_factory=dict)  # RMSD, SIM_ID and WALL of stored frames
    store_bytes: dict[Path, int] = field(default_factory=dict)  # each frame store's size
    accounting: list[dict[str, int]] = field(default_factory=list)  # accounting.SimAccount rows
    jobs: list[dict[str, Any]] = field(default_factory=list)  # launches (RUN/jobs.jsonl)
    notes: list[str] = field(default_factory=list)

    @cached_property
    def by_task(self) -> dict[str, list[Event]]:
        tasks: dict[str, list[Event]] = defaultdict(list)
        for event in self.events:
            tasks[event.get("task", "?")].append(event)
        return dict(sorted(tasks.items(), key=lambda item: task_sort_key(item[0])))

    @property
    def t0(self) -> float:
        return min((e["t"] for e in self.events), default=0.0)


# --------------------------------------------------------------------------- run directory


def check_run_dir(path: Path) -> RunDir:
    """The run directory at `path`, or a one-line ReportError."""
    run = RunDir(Path(path))
    if not run.root.is_dir():
        raise ReportError(f"{path}: no such directory (give a run directory made by the launcher)")
    if not run.config_file.is_file() and not run.tasks_dir.is_dir():
        raise ReportError(f"{path}: not a run directory (no config.yaml or tasks/ inside)")
    return run


def load_run(path: Path) -> RunData:
    """Events (torn lines skipped), config, stored frames and store sizes of a run."""
    run = check_run_dir(path)
    data = RunData(run, [e for e in read_run_events(run.root) if valid_event(e)])
    data.config = load_run_config(run, data.notes)
    data.frames = load_frames(run, data.by_task, data.notes)
    data.store_bytes = {store: folder_bytes(store) for store in run.aggregator_stores()}
    data.accounting = load_accounting(run, data.notes)
    data.jobs = read_jobs(run.jobs_file)
    if not data.events:
        data.notes.append("no events recorded yet")
    logger.info("%s: %d events of %d tasks, %d stored frames", run.root, len(data.events),
                len(data.by_task), len(data.frames.get(RMSD, ())))
    return data


def load_accounting(run: RunDir, notes: list[str]) -> list[dict[str, int]]:
    """The frame accounting table (streamed vs stored per simulation), or [] with a note."""
    from ddmd_stream.accounting import account_run, as_records

    try:
        return as_records(account_run(run))
    except (InputError, RuntimeError, ValueError, OSError) as error:
        notes.append(f"frame accounting not available ({str(error).splitlines()[0]})")
        return []


def valid_event(event: Any) -> bool:
    return isinstance(event, dict) and isinstance(event.get("t"), int | float) and "event" in event


def load_run_config(run: RunDir, notes: list[str]) -> Any:
    """The run's RunConfig, or None (with a note) when config.yaml is missing or unreadable."""
    from ddmd_stream.config import load_config

    if not run.config_file.is_file():
        notes.append("config.yaml missing: CPU;GPU and frames per segment unknown")
        return None
    try:
        return load_config(run.config_file)
    except InputError as error:
        notes.append(f"config.yaml unreadable ({error}); CPU;GPU unknown")
        return None


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --------------------------------------------------------------------------- frames


def load_frames(run: RunDir, by_task: dict[str, list[Event]], notes: list[str]) -> Frames:
    """RMSD and SIM_ID of every stored frame, with its WALL time of arrival when known."""
    stored = {path: _store_frames(path, notes) for path in run.aggregator_stores()}
    return merge_frames(stored, by_task, notes)


def merge_frames(stored: dict[Path, Frames], by_task: dict[str, list[Event]],
                 notes: list[str]) -> Frames:
    """The frames of every store (RMSD, SIM_ID) in one batch, in order of WALL time when the
    stores' write events give it (the live page keeps `stored` up to date incrementally)."""
    parts = [with_wall_times(frames, path, by_task) for path, frames in stored.items() if frames]
    if not parts:
        notes.append("no aggregated frames readable yet: RMSD plots are empty")
        return {}
    if not all(WALL in p for p in parts):
        notes.append("aggregator write events missing: RMSD plots use frame order, not time")
        parts = [{k: v for k, v in p.items() if k != WALL} for p in parts]
    merged = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    if WALL not in merged:
        return merged
    order = np.argsort(merged[WALL], kind="stable")
    return {name: values[order] for name, values in merged.items()}


def _store_frames(path: Path, notes: list[str]) -> Frames:
    from ddmd_stream.streams import read_store

    try:
        batch = read_store(path, [RMSD, SIM_ID])
    except (InputError, RuntimeError, ValueError, OSError) as error:
        notes.append(f"{path.name}: not readable ({str(error).splitlines()[0]})")
        return {}
    return {RMSD: batch[RMSD].astype(float), SIM_ID: batch[SIM_ID]} if batch else {}


def with_wall_times(frames: Frames, path: Path, by_task: dict[str, list[Event]]) -> Frames:
    """`frames` of the store at `path`, with WALL from its writer's write events when known."""
    writes = spans(by_task.get(store_writer(path), []), "write")
    if not writes:
        return frames
    return {**frames, WALL: frame_wall_times(len(frames[RMSD]), writes)}


def store_writer(path: Path) -> str:
    """The task that writes a store: agg-0001.bp → aggregator-0001, agg-sim-0003.bp → sim-0003
    (sequential mode, where each simulation writes its own store)."""
    parts = path.stem.split("-")
    return f"{'sim' if parts[1:2] == ['sim'] else 'aggregator'}-{parts[-1]}"


def frame_wall_times(count: int, writes: list[Event]) -> np.ndarray:
    """Wall time at which each stored frame was written, from the aggregator's write spans.

    Frames after the last recorded write (its events not flushed yet) get that write's time.
    """
    ends = np.cumsum([w.get("frames", 0) for w in writes])
    stamps = np.array([end_of(w) for w in writes])
    index = np.searchsorted(ends, np.arange(count), side="right")
    return stamps[np.minimum(index, len(stamps) - 1)]


# --------------------------------------------------------------------------- event helpers


def task_sort_key(task: str) -> tuple[int, str]:
    role = role_of(task)
    return (ROLES.index(role) if role in ROLES else len(ROLES), task)


def role_of(task: str) -> str:
    return task.rsplit("-", 1)[0]


def spans(events: Iterable[Event], name: str) -> list[Event]:
    return [e for e in events if e.get("event") == name]


def end_of(event: Event) -> float:
    return event["t"] + float(event.get("dur") or 0.0)


def task_intervals(events: list[Event]) -> list[tuple[float, float]]:
    """(start, end) of each life of one task: task_start to task_end, or to its last event.

    A task restarted by the engine appends to the same file, so one file may hold several lives.
    """
    lives: list[list[float]] = []
    for event in sorted(events, key=lambda e: e["t"]):
        if event["event"] == "task_start" or not lives:
            lives.append([event["t"], end_of(event), 0.0])
        elif lives[-1][2] == 0.0:
            lives[-1][1] = max(lives[-1][1], end_of(event))
            lives[-1][2] = 1.0 if event["event"] == "task_end" else 0.0
    return [(start, end) for start, end, _ in lives]


def task_seconds(events: list[Event]) -> float:
    return sum(end - start for start, end in task_intervals(events))


def role_events(data: RunData, role: str) -> dict[str, list[Event]]:
    return {task: events for task, events in data.by_task.items() if role_of(task) == role}


def role_spans(data: RunData, role: str, name: str) -> list[Event]:
    """The events called `name` of all tasks of `role`, task by task."""
    return [e for events in role_events(data, role).values() for e in spans(events, name)]


def finite(values: Iterable[Any]) -> list[float]:
    """The finite numbers among `values` (None, inf, nan and non-numbers dropped)."""
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
