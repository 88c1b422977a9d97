"""`ReplayingWriter`: a simulation's stream that loses no frame when its reader restarts.

It keeps every frame its reader has not acknowledged as stored (`streams.delivery`). While the
reader recorded beside the stream (`.reader`, written by the aggregator's pump) is alive it
writes as a `FrameWriter` does. When that reader is gone or replaced, it holds: it writes only
empty steps (SST accepts a late reader only inside a writer's end_step) until a reader says it
is connected, greets that reader, replays what was not acknowledged, and goes on. A writer whose
reader is down blocks, as it does when its reader is slow (QueueFullPolicy=Block).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from ddmd_stream.frames import batch_keys
from ddmd_stream.streams.adios import load_adios2
from ddmd_stream.streams.delivery import HELLO, hello_id, read_ack
from ddmd_stream.streams.liveness import ReaderInfo
from ddmd_stream.streams.writer import FrameWriter

logger = logging.getLogger(__name__)

CHECK_S = 0.2  # least time between looks at the reader (a miss in between is replayed)
ACK_READ_S = 2.0  # least time between reads of the ack
HOLD_POLL_S = 0.1  # while holding: an empty step, then a look at the reader, this often
HOLD_LOG_S = 60.0
MAX_KEPT = 50_000  # frames kept for a replay at most (a reader that never acknowledges)


class ReplayingWriter(FrameWriter):
    """A FrameWriter that replays unacknowledged frames to each new reader (SST streams)."""

    handshake = True

    def __init__(self, xml: Path, io_name: str, path: Path, open_timeout_s: float = 120.0,
                 stop_file: Path | None = None, liveness_timeout_s: float = 30.0,
                 should_stop: Callable[[], bool] | None = None):
        """`should_stop` ends a hold (default: the stop file exists)."""
        stop = Path(stop_file) if stop_file is not None else None
        self.should_stop = should_stop or (lambda: stop is not None and stop.exists())
        ReaderInfo.sidecar(Path(path)).unlink(missing_ok=True)  # a reader of an earlier writer
        self.liveness_timeout_s = liveness_timeout_s
        self.kept: deque[tuple[int, dict[str, np.ndarray]]] = deque()
        self.reader: ReaderInfo | None = None
        self.replayed = 0
        self._next_check = self._next_ack = 0.0
        self._hello_variable = None
        super().__init__(xml, io_name, path, open_timeout_s, stop_file=stop_file)

    def write(self, batch: Mapping[str, np.ndarray]) -> None:
        """Write `batch`, first waiting for a reader (and replaying to it) if it is gone."""
        if self._reader_changed() and not self._hold_and_replay():
            return  # stopped while holding: the frame stays unsent
        keys = batch_keys(batch)
        if keys is not None and len(keys):
            self._keep(int(keys[-1]), batch)
        super().write(batch)
        self._forget_acknowledged()

    def _keep(self, key: int, batch: Mapping[str, np.ndarray]) -> None:
        self.kept.append((key, {name: np.array(value) for name, value in batch.items()}))
        if len(self.kept) > MAX_KEPT:
            self.kept.popleft()
            logger.warning("%s: %d frames not acknowledged; the oldest can no longer be "
                           "replayed", self.path, MAX_KEPT)

    def _reader_changed(self) -> bool:
        """Is the reader we write to gone or replaced (looked at every CHECK_S)?"""
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + CHECK_S
        current = ReaderInfo.read(self.path)
        if self.reader is None and current is None:
            return False  # a reader without a sidecar (not a pump): plain writing
        return current != self.reader or not current.alive(self.path, self.liveness_timeout_s)

    def _hold_and_replay(self) -> bool:
        """Hold until a reader is connected, greet it, replay; False when stopped first."""
        reader = self._wait_for_reader()
        if reader is None:
            return False
        self.reader = reader
        self._greet(reader)
        self._replay()
        return True

    def _wait_for_reader(self) -> ReaderInfo | None:
        """A connected, live reader; None when the stop file appeared first."""
        logged = 0.0
        while True:
            reader = ReaderInfo.read(self.path)
            if reader is not None and reader.connected and \
                    reader.alive(self.path, self.liveness_timeout_s):
                return reader
            if self.should_stop():
                return None
            if time.monotonic() - logged >= HOLD_LOG_S:
                logger.warning("%s: no reader; holding %d unacknowledged frame(s) until one "
                               "connects", self.path, len(self.kept))
                logged = time.monotonic()
            self.engine.begin_step()  # an empty step: a late reader is let in at its end
            self.engine.end_step()
            self.heartbeat()
            time.sleep(HOLD_POLL_S)

    def _greet(self, reader: ReaderInfo) -> None:
        hello = np.array([hello_id(reader.token)], np.int64)
        if self._hello_variable is None:
            self._hello_variable = self.io.define_variable(HELLO, hello, [1], [0], [1])
        self.engine.begin_step()
        self.engine.put(self._hello_variable, hello, load_adios2().bindings.Mode.Sync)
        self.engine.end_step()
        logger.info("%s: reader pid %d on %s connected", self.path, reader.pid, reader.host)

    def _replay(self) -> None:
        """Everything not acknowledged, in order (the new reader drops what is stored)."""
        self._forget_acknowledged(force=True)
        for _, batch in self.kept:
            FrameWriter.write(self, batch)
        self.replayed += len(self.kept)
        if self.kept:
            logger.info("%s: replayed %d unacknowledged frame(s)", self.path, len(self.kept))

    def _forget_acknowledged(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_ack:
            return
        self._next_ack = now + ACK_READ_S
        acked = read_ack(self.path)
        while acked is not None and self.kept and self.kept[0][0] <= acked:
            self.kept.popleft()


def replay_supported(engine_name: str) -> bool:
    """Only a staging engine loses what it sends while no reader is connected."""
    return engine_name.lower() == "sst"

