"""`StreamPoller`: many streams served from one process, round robin, never blocking."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ddmd_stream.streams.adios import Batch, engine_type, is_file_engine
from ddmd_stream.streams.errors import StreamError, WriterDied
from ddmd_stream.streams.liveness import WriterInfo, stream_ready
from ddmd_stream.streams.reader import FrameReader

logger = logging.getLogger(__name__)


@dataclass
class _Source:
    """One stream of a poller and what happened to it."""

    key: int
    path: Path
    reader: FrameReader | None = None
    finished_token: str | None = None  # writer we already read to the end (or saw die)
    frames: int = 0
    ends: int = 0
    deaths: int = 0
    open_failures: int = 0


@dataclass
class StreamPoller:
    """Serves many streams from one process, round robin, never blocking on one of them.

    A stream is opened once its writer has appeared, and again after its writer restarts.
    """

    xml: Path
    io_name: str
    paths: Mapping[int, Path]
    open_timeout_s: float = 120.0
    liveness_timeout_s: float = 30.0
    sources: list[_Source] = field(init=False)

    def __post_init__(self) -> None:
        self.engine = engine_type(self.xml, self.io_name)
        self.sources = [_Source(key, Path(path)) for key, path in self.paths.items()]

    def poll(self) -> list[tuple[int, Batch]]:
        """One round over all streams: every batch available now, tagged with its stream key."""
        got: list[tuple[int, Batch]] = []
        for source in self.sources:
            if source.reader is None:
                self._try_open(source)
            if source.reader is not None:
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
        try:
            source.reader = FrameReader(
                self.xml, self.io_name, source.path, self.open_timeout_s, self.liveness_timeout_s
            )
        except StreamError as error:
            source.open_failures += 1
            log = logger.warning if source.open_failures == 1 else logger.debug
            log("stream %d: %s (will retry)", source.key, error)
            return
        source.reader.writer = info
        logger.info("stream %d opened: %s", source.key, source.path)

    def _drain(self, source: _Source, limit: int = 64) -> Iterator[Batch]:
        """Up to `limit` batches of one open stream, closing it when it ended or died."""
        reader = source.reader
        for _ in range(limit):
            try:
                batch = reader.next(0.0)
            except WriterDied as error:
                self._lost(source, error)
                return
            if batch is None:
                if reader.ended:
                    logger.info(
                        "stream %d ended cleanly after %d frames", source.key, source.frames
                    )
                    source.ends += 1
                    self._retire(source)
                return
            source.frames += len(next(iter(batch.values()), ()))
            yield batch

    def _lost(self, source: _Source, error: WriterDied) -> None:
        """The connection broke: reconnect later if its writer lives on, else retire it."""
        if self._writer_lives_on(source):
            logger.warning("stream %d: %s; its writer is alive: reconnecting", source.key, error)
            source.reader.close()
            source.reader = None
            return
        logger.warning("stream %d: %s", source.key, error)
        source.deaths += 1
        self._retire(source)

    def _writer_lives_on(self, source: _Source) -> bool:
        """Is the writer this reader was connected to still running (a connection hiccup)?"""
        known, current = source.reader.writer, WriterInfo.read(source.path)
        return (known is not None and current is not None and current.token == known.token
                and current.alive(source.path, self.liveness_timeout_s))

    def _retire(self, source: _Source) -> None:
        """Close a stream whose writer is done; it reopens only for a new writer."""
        source.finished_token = source.reader.writer.token if source.reader.writer else None
        source.reader.close()
        source.reader = None

    @property
    def open_count(self) -> int:
        """How many streams are open now."""
        return sum(s.reader is not None for s in self.sources)

    def close(self) -> None:
        """Close every open stream."""
        for source in self.sources:
            if source.reader is not None:
                source.reader.close()
                source.reader = None
