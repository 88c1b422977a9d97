"""Is a stream's peer alive? The `.writer` and `.reader` sidecars, pid checks, SST contact files."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Self

from ddmd_stream.atomic import atomic_write
from ddmd_stream.streams.adios import is_file_engine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerInfo:
    """One end of a stream (its process), kept in a sidecar beside the stream so the other end
    can tell a live peer from a dead one."""

    SUFFIX: ClassVar[str] = ".peer"

    pid: int
    host: str
    token: str

    @classmethod
    def sidecar(cls, path: Path) -> Path:
        """The sidecar file of this kind beside stream `path`."""
        return path.with_name(path.name + cls.SUFFIX)

    @classmethod
    def read(cls, path: Path) -> Self | None:
        """The peer recorded beside `path`, or None (no sidecar, or an unreadable one)."""
        try:
            return cls(**json.loads(cls.sidecar(path).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, path: Path) -> None:
        """Record this peer beside `path` (atomically)."""
        atomic_write(self.sidecar(path), json.dumps(asdict(self)), durable=False)

    def touch(self, path: Path) -> None:
        """Heartbeat: peers on other hosts judge liveness by the sidecar's age. A sidecar
        removed by someone else stays removed."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.sidecar(path))

    def known_dead(self) -> bool:
        """Certainly gone: a peer on this host whose process has ended."""
        return self.host == socket.gethostname() and not pid_alive(self.pid)

    def alive(self, path: Path, liveness_timeout_s: float) -> bool:
        """Same host: is the pid running? Elsewhere: was the sidecar touched recently?"""
        if self.host == socket.gethostname():
            return pid_alive(self.pid)
        try:
            age = time.time() - self.sidecar(path).stat().st_mtime
        except OSError:
            return False
        return age < liveness_timeout_s


@dataclass(frozen=True)
class WriterInfo(PeerInfo):
    """Who writes a stream (`.writer`). `handshake`: the writer greets each new reader and
    replays what it may have missed (`streams.replay`); its reader drops the steps before."""

    SUFFIX: ClassVar[str] = ".writer"

    started: float = 0.0
    handshake: bool = False


@dataclass(frozen=True)
class ReaderInfo(PeerInfo):
    """Who reads a stream (`.reader`), written by the reader before it opens the stream and
    again, `connected`, once its open returned."""

    SUFFIX: ClassVar[str] = ".reader"

    connected: bool = False


def pid_alive(pid: int) -> bool:
    """Is process `pid` of this host running (a zombie is not)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def contact_file(path: Path) -> Path:
    """Where SST writes a stream's contact information."""
    return path.with_name(path.name + ".sst")


def clean_stale_contact_files(folder: Path) -> list[Path]:
    """Remove `*.sst` files whose writer is gone (they break readers); returns those removed."""
    removed = []
    for sst in Path(folder).glob("*.sst"):
        stream = sst.with_name(sst.name.removesuffix(".sst"))
        info = WriterInfo.read(stream)
        if info is None or not info.alive(stream, liveness_timeout_s=0.0):
            sst.unlink(missing_ok=True)
            removed.append(sst)
    if removed:
        logger.info("removed %d stale SST contact file(s) in %s", len(removed), folder)
    return removed


def stream_ready(path: Path, engine: str) -> WriterInfo | None:
    """The writer of `path` if it has opened the stream far enough for a reader to connect."""
    info = WriterInfo.read(path)
    if info is None:
        return None
    opened = (path / "md.idx").exists() if is_file_engine(engine) else contact_file(path).exists()
    return info if opened else None
