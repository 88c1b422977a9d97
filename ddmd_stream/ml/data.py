"""A bounded window of the most recent frames, filled incrementally from the aggregators' stores."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ddmd_stream.streams import Batch, ShapeMismatch, StoreReader, read_frames
from ddmd_stream.streams.batches import frames_array

if TYPE_CHECKING:
    from ddmd_stream.ml.base import LatentModel

logger = logging.getLogger(__name__)

# Where a located frame lies: which store of the window, which step of it, which row of that step.
STORE, STEP_IN_STORE, ROW_IN_STEP = "_store", "_step_in_store", "_row_in_step"


class RingBuffer:
    """The last `capacity` frames of some named arrays, in arrival order."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.arrays: dict[str, np.ndarray] = {}
        self.next = 0  # write position
        self.total = 0  # frames ever added
        self.serials = np.full(capacity, -1, np.int64)  # per row: its frame's number (or -1)

    def __len__(self) -> int:
        return min(self.total, self.capacity)

    def add(self, batch: Batch) -> None:
        """Append `batch`; ShapeMismatch (nothing added) when a field's frame shape differs
        from the frames held."""
        if not self.arrays:
            self.arrays = {n: np.empty((self.capacity, *a.shape[1:]), a.dtype)
                           for n, a in batch.items()}
        self._check_shapes(batch)
        count = len(next(iter(batch.values())))
        keep = min(count, self.capacity)
        positions = (self.next + np.arange(count - keep, count)) % self.capacity
        for name, array in self.arrays.items():
            array[positions] = batch[name][count - keep:]
        self.serials[positions] = self.total + np.arange(count - keep, count)
        self.next = (self.next + count) % self.capacity
        self.total += count

    def _check_shapes(self, batch: Batch) -> None:
        for name, array in self.arrays.items():
            if batch[name].shape[1:] != array.shape[1:]:
                raise ShapeMismatch(
                    f"field {name!r}: new frames have shape {batch[name].shape[1:]}, the window "
                    f"holds {array.shape[1:]}; the starting structures differ in it (different "
                    "proteins or atom selections?); use structures of one protein")

    def rows(self, n: int | None = None) -> np.ndarray:
        """Buffer rows of the most recent `n` frames (all when None), oldest first."""
        size = len(self)
        n = size if n is None else min(n, size)
        if size == self.capacity:
            return (self.next - n + np.arange(n)) % self.capacity
        return np.arange(size - n, size)

    def gather(self, rows: np.ndarray, fields: list[str] | None = None) -> Batch:
        """Copies of `fields` (all when None) at buffer `rows`."""
        names = self.arrays if fields is None else fields
        return {name: self.arrays[name][rows] for name in names}

    def latest(self, n: int | None = None, fields: list[str] | None = None) -> Batch:
        """The most recent `n` frames (all when None) of `fields` (all when None), oldest first."""
        return self.gather(self.rows(n), fields)


class LatentCache:
    """Latents of buffer rows, kept until the row holds another frame or the model changes.

    A steady agent cycle then encodes only the frames that arrived since the last one."""

    def __init__(self, buffer: RingBuffer):
        self.buffer = buffer
        self.latents: np.ndarray | None = None
        self.serials = np.full(buffer.capacity, -1, np.int64)  # frame each latent belongs to
        self.model_version: int | None = None

    def encode(self, rows: np.ndarray, model: LatentModel, version: int,
               batch_size: int) -> tuple[np.ndarray, int]:
        """Latents of buffer `rows` under model `version`, and how many had to be encoded."""
        if version != self.model_version:
            self.serials[:] = -1
            self.model_version = version
        current = self.buffer.serials[rows]
        stale = self.serials[rows] != current
        if stale.any():
            field = model.input_field
            fresh = model.encode(self.buffer.gather(rows[stale], [field])[field], batch_size)
            if self.latents is None or self.latents.shape[1:] != fresh.shape[1:]:
                self.latents = np.zeros((self.buffer.capacity, *fresh.shape[1:]), fresh.dtype)
            self.latents[rows[stale]] = fresh
            self.serials[rows[stale]] = current[stale]
        if self.latents is None:  # no rows asked for yet
            return np.empty((0, 0), np.float32), 0
        return self.latents[rows], int(stale.sum())


class FrameWindow:
    """Reads new steps of every `agg-*.bp` store in a folder and keeps the latest frames.

    With `locate`, it also keeps where each frame lies in its store (store, step, row), so that
    fields it does not hold can be read for a few frames later (`read_stored`): the agent keeps
    only small fields in memory and reads the chosen outliers' coordinates from the store."""

    def __init__(self, xml: Path, io_name: str, stream_dir: Path, variables: list[str],
                 max_samples: int, liveness_timeout_s: float = 30.0, locate: bool = False):
        self.xml, self.io_name, self.stream_dir = Path(xml), io_name, Path(stream_dir)
        self.variables = variables
        self.liveness_timeout_s = liveness_timeout_s
        self.locate = locate
        self.buffer = RingBuffer(max_samples)
        self.readers: dict[Path, StoreReader] = {}
        self.stores: list[Path] = []  # index = the STORE column of a located frame

    def __len__(self) -> int:
        return len(self.buffer)

    @property
    def total_seen(self) -> int:
        return self.buffer.total

    def update(self) -> int:
        """Read what is new in every store; returns the number of new frames."""
        for path in sorted(self.stream_dir.glob("agg-*.bp")):
            if path not in self.readers:
                self.readers[path] = StoreReader(self.xml, self.io_name, path,
                                                 self.liveness_timeout_s, variables=self.variables)
                self.stores.append(path)
        new = 0
        for store, reader in enumerate(self.readers.values()):
            for step, batch in reader.read_new_steps():  # steps lacking a variable: skipped
                count = len(batch[self.variables[0]])
                if self.locate:
                    batch = {**batch, STORE: np.full(count, store, np.int64),
                             STEP_IN_STORE: np.full(count, step, np.int64),
                             ROW_IN_STEP: np.arange(count, dtype=np.int64)}
                self.buffer.add(batch)
                new += count
        return new

    def latest(self, n: int | None = None, fields: list[str] | None = None) -> Batch:
        return self.buffer.latest(n, fields)

    def rows(self, n: int | None = None) -> np.ndarray:
        """Buffer rows of the newest `n` frames: stable until the next `update`."""
        return self.buffer.rows(n)

    def gather(self, rows: np.ndarray, fields: list[str] | None = None) -> Batch:
        return self.buffer.gather(rows, fields)

    def read_stored(self, rows: np.ndarray, fields: list[str]) -> Batch:
        """`fields` of the frames at buffer `rows`, read from their stores (needs `locate`).

        A field whose frame shape differs between those frames (structures of different sizes:
        all_positions, velocities) is an object array of per-frame arrays."""
        where = self.buffer.gather(rows, [STORE, STEP_IN_STORE, ROW_IN_STEP])
        parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}  # name: (mask, values)
        for store in np.unique(where[STORE]).tolist():
            mine = where[STORE] == store
            batch = read_frames(self.stores[store], where[STEP_IN_STORE][mine],
                                where[ROW_IN_STEP][mine], fields, self.xml, self.io_name)
            for name, values in batch.items():
                parts.setdefault(name, []).append((mine, values))
        out = {name: _place(len(rows), placed) for name, placed in parts.items()}
        logger.debug("read %s of %d frames from their stores", fields, len(rows))
        return out

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()


def _place(count: int, parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """`count` frames from (mask, values) parts; an object array of per-frame arrays when the
    parts differ in frame shape or dtype."""
    kinds = {(values.dtype, values.shape[1:]) for _, values in parts}
    if len(kinds) == 1 and parts[0][1].dtype != object:
        dtype, shape = kinds.pop()
        out = np.empty((count, *shape), dtype)
        for mask, values in parts:
            out[mask] = values
        return out
    out = np.empty(count, dtype=object)
    for mask, values in parts:
        out[mask] = frames_array(list(values))
    return out
