"""Incremental reads of a growing run: new event lines and new store steps, never all again.

`EventTail` follows every `RUN/tasks/*/events.jsonl` from the byte where it stopped (a torn
last line waits for its end); `FrameTail` follows every frame store with a `StoreReader`.
The Monitor (restart counts for status.json) and the live page use them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ddmd_stream.frames import RMSD, SIM_ID
from ddmd_stream.report.load import Event, Frames, valid_event
from ddmd_stream.rundir import RunDir

if TYPE_CHECKING:
    from ddmd_stream.streams import StoreReader

logger = logging.getLogger(__name__)


class FileTail:
    """The complete lines appended to one file since the last call."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self._partial = b""

    def new_lines(self) -> list[bytes]:
        try:
            with open(self.path, "rb") as source:
                if source.seek(0, 2) < self.offset:  # replaced by a shorter file: start over
                    self.offset, self._partial = 0, b""
                source.seek(self.offset)
                chunk = source.read()
        except OSError:
            return []
        self.offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        return lines


class EventTail:
    """New events of every task of a run (files that appear later are picked up)."""

    def __init__(self, run: RunDir):
        self.run = run
        self.files: dict[Path, FileTail] = {}

    def read_new(self) -> list[Event]:
        """Events recorded since the last call (torn or invalid lines skipped), file by file."""
        for path in sorted(self.run.tasks_dir.glob("*/events.jsonl")):
            self.files.setdefault(path, FileTail(path))
        return [event for tail in self.files.values() for event in _parse(tail.new_lines())]


def _parse(lines: list[bytes]) -> list[Event]:
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if valid_event(event):
            events.append(event)
    return events


class FrameTail:
    """RMSD and SIM_ID of every stored frame, store by store, read a new step at a time."""

    def __init__(self, run: RunDir, xml: Path, io_name: str, liveness_timeout_s: float):
        self.run, self.xml, self.io_name = run, xml, io_name
        self.liveness_timeout_s = liveness_timeout_s
        self.readers: dict[Path, StoreReader] = {}
        self.parts: dict[Path, list[Frames]] = {}

    def update(self) -> int:
        """Read the steps written since the last call; returns the number of new frames."""
        from ddmd_stream.streams import StoreReader

        new = 0
        for path in self.run.aggregator_stores():
            if path not in self.readers:
                self.readers[path] = StoreReader(self.xml, self.io_name, path,
                                                 self.liveness_timeout_s, [RMSD, SIM_ID])
                self.parts[path] = []
            for batch in self.readers[path].read_new():
                self.parts[path].append({RMSD: batch[RMSD].astype(float),
                                         SIM_ID: batch[SIM_ID]})
                new += len(batch[RMSD])
        return new

    def stored(self) -> dict[Path, Frames]:
        """Every store's frames so far, in store order ({} for a store with none yet)."""
        return {path: _joined(parts) for path, parts in self.parts.items()}

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()


def _joined(parts: list[Frames]) -> Frames:
    if not parts:
        return {}
    if len(parts) > 1:  # keep one array per store: the next join is cheap
        parts[:] = [{name: np.concatenate([p[name] for p in parts]) for name in parts[0]}]
    return parts[0]
