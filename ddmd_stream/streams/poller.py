"""`StreamPoller`: many streams served from one process, round robin, never blocking.

Each open stream is read by a pump process of its own (streams/pump.py): a writer that hangs
(SIGSTOP, a frozen node) can block only its own pump, never the poller or the other streams.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddmd_stream.streams.adios import Batch, engine_type, is_file_engine
from ddmd_stream.streams.batches import frame_count
from ddmd_stream.streams.liveness import stream_ready
from ddmd_stream.streams.pump import PumpSpec, StreamPump, start_forkserver

logger = logging.getLogger(__name__)


@dataclass
class _Source:
    """One stream of a poller and what happened to it."""

    key: int
    path: Path
    pump: StreamPump | None = None
    opened: bool = False  # its pump has connected to the writer
    finished_token: str | None = None  # writer we already read to the end (or saw die)
    frames: int = 0
    ends: int = 0
    deaths: int = 0
    open_failures: int = 0


@dataclass
class StreamPoller:
    """Serves many streams from one process, round robin, never blocking on one of them.

    A stream is opened (by a pump process) once its writer has appeared, and again after its
    writer restarts.
    """

    xml: Path
    io_name: str
    paths: Mapping[int, Path]
    open_timeout_s: float = 120.0
    liveness_timeout_s: float = 30.0
    sources: list[_Source] = field(init=False)
    _stopping: list[StreamPump] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.engine = engine_type(self.xml, self.io_name)
        self.sources = [_Source(key, Path(path)) for key, path in self.paths.items()]
        start_forkserver()

    def poll(self) -> list[tuple[int, Batch]]:
        """One round over all streams: every batch available now, tagged with its stream key."""
        got: list[tuple[int, Batch]] = []
        self._stopping = [pump for pump in self._stopping if not pump.reaped()]
        for source in self.sources:
            if source.pump is None:
                self._try_open(source)
            if source.pump is not None:
                got.extend((source.key, batch) for batch in self._drain(source))
        return got

    def _try_open(self, source: _Source) -> None:
        info = stream_ready(source.path, self.engine)
        if info is None or info.token == source.finished_token:
            return
        if not is_file_engine(self.engine) and info.known_dead():
            # A contact file left by a dead writer: nobody to connect to. (A file stream is
            # still opened: what its dead writer wrote can be read. A writer on another host
            # cannot heartbeat while it waits in its open, so only a local pid is trusted.)
            logger.warning("stream %d: writer (pid %d on %s) of %s is gone", source.key,
                           info.pid, info.host, source.path)
            source.finished_token = info.token
            source.deaths += 1
            return
        source.pump = StreamPump(PumpSpec(self.xml, self.io_name, source.path, info,
                                          self.open_timeout_s, self.liveness_timeout_s))

    def _drain(self, source: _Source, limit: int = 64) -> Iterator[Batch]:
        """The batches of up to `limit` messages of one stream's pump, ending the pump when its
        stream ended."""
        for message in source.pump.messages(limit):
            kind = message[0]
            if kind == "batches":
                for batch in message[1]:
                    source.frames += frame_count(batch)
                    yield batch
            else:
                self._on_status(source, kind, *message[1:])
        if source.pump.done:
            self._end_pump(source)

    def _on_status(self, source: _Source, kind: str, *details: Any) -> None:
        """What a pump says about its stream besides batches."""
        if kind == "opened":
            source.opened = True
            logger.info("stream %d opened: %s", source.key, source.path)
        elif kind == "open_failed":
            source.open_failures += 1
            log = logger.warning if source.open_failures == 1 else logger.debug
            log("stream %d: %s (will retry)", source.key, details[0])
        elif kind == "ended":
            logger.info("stream %d ended cleanly after %d frames", source.key, source.frames)
            source.ends += 1
            source.finished_token = source.pump.spec.writer.token
        elif kind == "lost":
            self._lost(source, *details)

    def _lost(self, source: _Source, why: str, writer_alive: bool) -> None:
        """The connection broke: reconnect later if its writer lives on, else retire it."""
        if writer_alive:
            logger.warning("stream %d: %s; its writer is alive: reconnecting", source.key, why)
            return
        logger.warning("stream %d: %s", source.key, why)
        source.deaths += 1
        source.finished_token = source.pump.spec.writer.token

    def _end_pump(self, source: _Source) -> None:
        """Stop a source's pump; it is reaped by later polls (a closing stream can block)."""
        source.pump.request_stop()
        self._stopping.append(source.pump)
        source.pump = None
        source.opened = False

    @property
    def open_count(self) -> int:
        """How many streams are open now."""
        return sum(s.opened for s in self.sources)

    def close(self) -> None:
        """Close every open stream (a pump stuck on a half-dead writer is killed)."""
        for source in self.sources:
            if source.pump is not None:
                self._end_pump(source)
        while self._stopping:
            self._stopping = [pump for pump in self._stopping if not pump.reaped()]
            time.sleep(0.01)
