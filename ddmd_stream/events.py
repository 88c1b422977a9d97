"""Timestamped task events as JSON lines: cheap to record, merged by the report.

Each line: {"t": time.time(), "task": "sim-0001", "event": "segment", "dur": seconds, ...}.
Spans record their start time `t` and duration `dur` (from perf_counter).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class EventRecorder:
    """Appends events to one file; buffered, flushed every `flush_every_s` and on close."""

    def __init__(self, path: Path | None, task: str, flush_every_s: float = 2.0):
        self.path = path
        self.task = task
        self.flush_every_s = flush_every_s
        self._buffer: list[str] = []
        self._last_flush = time.monotonic()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def event(self, name: str, **data: Any) -> None:
        self._append({"t": time.time(), "task": self.task, "event": name, **data})

    @contextmanager
    def span(self, name: str, **data: Any) -> Iterator[dict[str, Any]]:
        """Record `name` with its duration; the yielded dict may gain fields inside the block."""
        started_wall, started = time.time(), time.perf_counter()
        extra: dict[str, Any] = {}
        try:
            yield extra
        finally:
            duration = time.perf_counter() - started
            self._append(
                {
                    "t": started_wall,
                    "task": self.task,
                    "event": name,
                    "dur": duration,
                    **data,
                    **extra,
                }
            )

    def _append(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        self._buffer.append(json.dumps(record, default=_plain))
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        if self.path is None or not self._buffer:
            return
        try:
            with open(self.path, "a") as out:
                out.write("\n".join(self._buffer) + "\n")
        except OSError as error:
            logger.error("cannot write events to %s: %s", self.path, error)
        self._buffer.clear()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()


def _plain(value: Any) -> Any:
    """numpy scalars and paths as plain JSON values."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def read_events(path: Path) -> list[dict[str, Any]]:
    """Events of one file; a torn last line (task killed mid-write) is skipped."""
    events = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def read_run_events(run_dir: Path) -> list[dict[str, Any]]:
    """All events of a run, ordered by time."""
    events = []
    for path in sorted(Path(run_dir).glob("tasks/*/events.jsonl")):
        events.extend(read_events(path))
    return sorted(events, key=lambda e: e.get("t", 0.0))


def record_job(jobs_file: Path, start: float, on_existing: str) -> None:
    """Append one launch to a run's jobs file (`RunDir.jobs_file`): the report marks where
    each job of a campaign began."""
    line = {"job": len(read_jobs(jobs_file)) + 1, "t": start, "on_existing": on_existing}
    with open(jobs_file, "a") as out:
        out.write(json.dumps(line) + "\n")


def read_jobs(jobs_file: Path) -> list[dict[str, Any]]:
    """The launches of a run, oldest first (torn lines skipped)."""
    return [job for job in read_events(jobs_file) if "t" in job]
