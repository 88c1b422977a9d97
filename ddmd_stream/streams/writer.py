"""Writers of batches to one stream: `FrameWriter` (a step per batch) and `BatchingWriter`."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ddmd_stream.streams.adios import Batch, declare_io, load_adios2
from ddmd_stream.streams.batches import concat_batches, frame_count, group_by_shape
from ddmd_stream.streams.errors import StreamError
from ddmd_stream.streams.liveness import WriterInfo, contact_file
from ddmd_stream.streams.seeds import reserve_evpath_seed
from ddmd_stream.streams.watchdog import open_deadline

logger = logging.getLogger(__name__)


class FrameWriter:
    """Writes batches to one stream; the first batch fixes the variables and their dtypes."""

    HEARTBEAT_S = 1.0  # least time between touches of the `.writer` sidecar
    handshake = False  # greets each new reader (streams.replay)

    def __init__(
        self,
        xml: Path,
        io_name: str,
        path: Path,
        open_timeout_s: float = 120.0,
        append: bool = False,
        stop_file: Path | None = None,
    ):
        self.path = Path(path)
        self.stop_file = stop_file  # a blocked open ends when it appears (the run's STOP)
        self.adios, self.io = declare_io(xml, io_name)
        self.engine_name = self.io.engine_type().lower()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._variables: dict[str, Any] = {}
        self.put_seconds = 0.0
        self.frames_written = 0
        self.bytes_written = 0
        contact_file(self.path).unlink(missing_ok=True)  # a stale one would break readers
        self.info = WriterInfo(os.getpid(), socket.gethostname(), uuid.uuid4().hex, time.time(),
                               self.handshake)
        self.info.write(self.path)
        self._last_heartbeat = time.monotonic()
        self.engine = self._open(open_timeout_s, append)

    def _open(self, open_timeout_s: float, append: bool) -> Any:
        """Open the engine (appending to an existing store if asked), ending the process when
        no reader comes within `open_timeout_s`."""
        modes = load_adios2().bindings.Mode
        mode = modes.Append if append and self.path.exists() else modes.Write
        logger.info("opening %s stream %s (waiting up to %.0f s for a reader)",
                    self.engine_name, self.path, open_timeout_s)
        message = (
            f"no reader opened stream {self.path} ({self.engine_name}) within"
            f" {open_timeout_s:g} s; is its aggregator running? (streams.open_timeout_s)"
        )
        if self.engine_name == "sst":
            reserve_evpath_seed(self.path.parent)
        with open_deadline(open_timeout_s, message, self.stop_file):
            return self.io.open(str(self.path), mode)

    def _variable(self, name: str, array: np.ndarray) -> Any:
        """The ADIOS variable `name`, defined or resized to `array`'s shape."""
        shape = list(array.shape)
        variable = self._variables.get(name)
        if variable is None:
            variable = self.io.define_variable(name, array, shape, [0] * len(shape), shape)
            self._variables[name] = variable
        else:
            variable.set_shape(shape)
            variable.set_selection([[0] * len(shape), shape])
        return variable

    def write(self, batch: Mapping[str, np.ndarray]) -> None:
        """Publish one step holding `batch` (arrays with a common leading frame dimension)."""
        started = time.perf_counter()
        arrays = {name: _writable(value) for name, value in batch.items()}
        counts = {a.shape[0] for a in arrays.values()}
        if len(counts) != 1:
            raise StreamError(f"{self.path}: batch arrays disagree on the frame count: {counts}")
        self.engine.begin_step()
        for name, array in arrays.items():
            self.engine.put(self._variable(name, array), array, load_adios2().bindings.Mode.Sync)
        self.engine.end_step()
        self.heartbeat(force=True)
        self.put_seconds += time.perf_counter() - started
        self.frames_written += counts.pop()
        self.bytes_written += sum(a.nbytes for a in arrays.values())

    def heartbeat(self, force: bool = False) -> None:
        """Tell readers on other hosts this writer is alive (call it during long quiet spells)."""
        now = time.monotonic()
        if force or now - self._last_heartbeat >= self.HEARTBEAT_S:
            try:
                os.utime(WriterInfo.sidecar(self.path))
            except FileNotFoundError:  # removed by someone else: put it back
                self.info.write(self.path)
            self._last_heartbeat = now

    @property
    def is_open(self) -> bool:
        """Opened (the constructor got that far) and not closed yet."""
        return getattr(self, "engine", None) is not None

    def close(self) -> None:
        """Close the stream (readers see its end) and remove the sidecar."""
        if self.is_open:
            self.engine.close()
            self.engine = None
            WriterInfo.sidecar(self.path).unlink(missing_ok=True)

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BatchingWriter(FrameWriter):
    """A FrameWriter that collects batches and writes them as one step on `flush()`.

    `close` flushes first. Used where readers come after the writer (sequential mode: a
    segment becomes one step).
    """

    def __init__(self, xml: Path, io_name: str, path: Path, open_timeout_s: float = 120.0,
                 append: bool = False):
        self.pending: list[Batch] = []
        super().__init__(xml, io_name, path, open_timeout_s, append)

    def write(self, batch: Mapping[str, np.ndarray]) -> None:
        """Collect `batch` (copied) for the next `flush`."""
        self.pending.append({name: np.array(value) for name, value in batch.items()})

    def flush(self) -> int:
        """Write what was collected as one step (one per shape signature, should the frames
        differ in shape); returns the frame count."""
        groups = group_by_shape([(0, batch) for batch in self.pending])
        self.pending.clear()
        frames = 0
        for group in groups:
            batch = concat_batches(group)
            super().write(batch)
            frames += frame_count(batch)
        return frames

    def close(self) -> None:
        """Flush, then close."""
        try:
            if self.is_open:
                self.flush()
        finally:
            super().close()


def _writable(value: np.ndarray) -> np.ndarray:
    """ADIOS rejects bool arrays and needs contiguous memory."""
    array = np.ascontiguousarray(value)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.ndim == 0:
        raise StreamError("batch values need a leading frame dimension (got a scalar)")
    return array
