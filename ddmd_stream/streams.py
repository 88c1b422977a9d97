"""Frames over ADIOS2: writers, readers, a multi-stream poller and an incremental store reader.

A *batch* is a dict of numpy arrays that share a leading frame dimension K; a simulation writes
batches of one frame, an aggregator batches of many. Each ADIOS step holds one batch.
Writers and readers open by IO name from an ADIOS XML file: the engine (SST, BP5, BP4, …) and
its parameters come only from the XML, so a transport is swapped by editing the XML.

`python -m ddmd_stream.streams ls FILE.bp` and `… export FILE.bp OUT.h5|OUT.npz` inspect stores.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ddmd_stream.errors import InputError

logger = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]
# Engines of the PyPI adios2 wheel (no MPI, DataMan, SSC or HDF5 there).
AVAILABLE_ENGINES = {"sst", "bp5", "bp4", "bp3", "bpfile", "bp", "file", "filestream", "null",
                     "nullcore", "inline"}
FILE_ENGINES = {"bp5", "bp4", "bp3", "bpfile", "file", "filestream", "hdf5"}


class StreamError(InputError):
    """A stream could not be opened, read or written; the message says which and why."""


class StreamOpenTimeout(StreamError):
    """No peer (reader for a writer, writer for a reader) appeared in time."""


class WriterDied(StreamError):
    """The writer of a stream went away without closing it."""


# --------------------------------------------------------------------------- ADIOS setup


def _adios2():  # imported lazily: `ls`/config users need not pay for it
    import adios2

    return adios2


def validate_xml(xml: Path, io_names: list[str]) -> str | None:
    """A readable problem with an ADIOS XML file (missing, unparsable, IO absent), or None."""
    if not xml.is_file():
        return f"{xml}: ADIOS XML file not found"
    try:
        root = ElementTree.parse(xml).getroot()
    except ElementTree.ParseError as error:
        return f"{xml}: not valid XML: {error}"
    declared = {io.get("name") for io in root.iter("io")}
    missing = [name for name in io_names if name not in declared]
    if missing:
        return f"{xml}: no <io name=...> for {', '.join(missing)} (declared: {sorted(declared)})"
    for io in root.iter("io"):
        engine = io.find("engine")
        if engine is None or not engine.get("type"):
            return f"{xml}: <io name='{io.get('name')}'> has no <engine type=...>"
        if engine.get("type", "").lower() not in AVAILABLE_ENGINES:
            return (f"{xml}: <io name='{io.get('name')}'> engine {engine.get('type')!r} is not in "
                    f"this adios2 build; use one of SST, BP5, BP4, Null, Inline")
    return None


def engine_parameters(xml: Path, io_name: str) -> dict[str, str]:
    """The <parameter key=... value=...> pairs of `io_name`'s engine in `xml`."""
    root = ElementTree.parse(xml).getroot()
    for io in root.iter("io"):
        engine = io.find("engine")
        if io.get("name") == io_name and engine is not None:
            return {p.get("key", ""): p.get("value", "") for p in engine.iter("parameter")}
    return {}


def declare_io(xml: Path, io_name: str):
    """The IO `io_name` configured by `xml` (engine and parameters from the XML only)."""
    problem = validate_xml(Path(xml), [io_name])
    if problem:
        raise StreamError(problem)
    adios = _adios2().Adios(str(xml))
    io = adios.declare_io(io_name)
    return adios, io


def engine_type(xml: Path, io_name: str) -> str:
    """The engine (lower case) that `xml` gives `io_name`, without starting ADIOS."""
    problem = validate_xml(Path(xml), [io_name])
    if problem:
        raise StreamError(problem)
    root = ElementTree.parse(xml).getroot()
    io = next(io for io in root.iter("io") if io.get("name") == io_name)
    return io.find("engine").get("type", "").lower()


def is_file_engine(engine: str) -> bool:
    return engine.lower() in FILE_ENGINES


# --------------------------------------------------------------------------- writer identity


@dataclass(frozen=True)
class WriterInfo:
    """Who writes a stream, kept beside it so readers can tell a live writer from a dead one."""

    pid: int
    host: str
    token: str
    started: float

    @staticmethod
    def sidecar(path: Path) -> Path:
        return path.with_name(path.name + ".writer")

    @classmethod
    def read(cls, path: Path) -> WriterInfo | None:
        try:
            return cls(**json.loads(cls.sidecar(path).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, path: Path) -> None:
        tmp = self.sidecar(path).with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.__dict__))
        os.replace(tmp, self.sidecar(path))

    def known_dead(self) -> bool:
        """Certainly gone: a writer on this host whose process has ended."""
        return self.host == socket.gethostname() and not _pid_alive(self.pid)

    def alive(self, path: Path, liveness_timeout_s: float) -> bool:
        """Same host: is the pid running? Elsewhere: was the sidecar touched recently?"""
        if self.host == socket.gethostname():
            return _pid_alive(self.pid)
        try:
            age = time.time() - self.sidecar(path).stat().st_mtime
        except OSError:
            return False
        return age < liveness_timeout_s


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
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


# EVPath, under ADIOS2's SST, names each process's connection manager with
# srand48(time(NULL) + getpid()); lrand48(). Two processes whose start second plus pid coincide
# get the same name, and a reader connected to both mixes their connections up: one writer gets
# the other's messages and dies of SIGSEGV. Processes that share a stream folder therefore make
# sure their seeds differ before their first SST open.
_evpath_seed: int | None = None
SEED_REGISTRY = ".evpath-seeds"
FOREIGN_SEED_HOLD_S = 86400.0  # a seed taken on another host is avoided for this long


def reserve_evpath_seed(folder: Path) -> int:
    """Make sure this process's EVPath seed (second + pid) is unique among live processes.

    Registers the seed in `folder/.evpath-seeds/` and returns it; waits for the next second
    when the current one's seed is taken (or too little of the second is left to open in it).
    Call right before the first SST open of the process; later calls return at once.
    """
    global _evpath_seed
    if _evpath_seed is not None:
        return _evpath_seed
    from filelock import FileLock

    registry = Path(folder) / SEED_REGISTRY
    registry.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}"
    while True:
        now = time.time()
        if now % 1.0 > 0.5:  # the open must happen within the same second
            time.sleep(1.0 - now % 1.0 + 0.01)
            continue
        seed = int(now) + os.getpid()
        with FileLock(str(registry) + ".lock", timeout=60):
            holder = registry / str(seed)
            if not _seed_held(holder, me):
                _prune_seeds(registry)
                holder.write_text(me)
                _evpath_seed = seed
                return seed
        logger.info("EVPath seed %d is taken; waiting for the next second", seed)
        time.sleep(1.0 - time.time() % 1.0 + 0.01)


def _seed_held(holder: Path, me: str) -> bool:
    """Does a live process other than this one hold the seed file `holder`?"""
    try:
        host, pid = holder.read_text().split()
        age = time.time() - holder.stat().st_mtime
    except (OSError, ValueError):
        return False
    if f"{host} {pid}" == me:
        return False
    if host != socket.gethostname():
        return age < FOREIGN_SEED_HOLD_S
    return _pid_alive(int(pid))


def _prune_seeds(registry: Path) -> None:
    for holder in registry.iterdir():
        if holder.is_file() and not _seed_held(holder, ""):
            holder.unlink(missing_ok=True)


@contextmanager
def open_deadline(seconds: float, message: str) -> Iterator[None]:
    """End this process with `message` if the block does not finish within `seconds`.

    Blocking ADIOS opens hold the GIL and ignore signals, so the guard is a tiny watchdog
    process that waits on a pipe; closing the pipe (block finished) releases it.
    """
    code = (  # stdin reaches EOF when the block finished or the guarded process is gone
        "import os,select,signal,sys\n"
        "pid,secs,msg=int(sys.argv[1]),float(sys.argv[2]),sys.argv[3]\n"
        "if not select.select([sys.stdin],[],[],secs)[0]:\n"
        "    sys.stderr.write('error: '+msg+'\\n'); sys.stderr.flush()\n"
        "    os.kill(pid,signal.SIGTERM)\n"
        "    if not select.select([sys.stdin],[],[],3)[0]:\n"
        "        os.kill(pid,signal.SIGKILL)\n"
    )
    guard = subprocess.Popen(
        [sys.executable, "-c", code, str(os.getpid()), str(seconds), message],
        stdin=subprocess.PIPE,
    )
    try:
        yield
    finally:
        guard.stdin.close()
        guard.wait()


# --------------------------------------------------------------------------- writer


class FrameWriter:
    """Writes batches to one stream; the first batch fixes the variables and their dtypes."""

    HEARTBEAT_S = 1.0  # least time between touches of the `.writer` sidecar

    def __init__(
        self,
        xml: Path,
        io_name: str,
        path: Path,
        open_timeout_s: float = 120.0,
        append: bool = False,
    ):
        self.path = Path(path)
        self.adios, self.io = declare_io(xml, io_name)
        self.engine_name = self.io.engine_type().lower()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._variables: dict[str, object] = {}
        self.put_seconds = 0.0
        self.frames_written = 0
        self.bytes_written = 0
        contact_file(self.path).unlink(missing_ok=True)  # a stale one would break readers
        self.info = WriterInfo(os.getpid(), socket.gethostname(), uuid.uuid4().hex, time.time())
        self.info.write(self.path)
        self._last_heartbeat = time.monotonic()
        modes = _adios2().bindings.Mode
        mode = modes.Append if append and self.path.exists() else modes.Write
        logger.info("opening %s stream %s (waiting up to %.0f s for a reader)",
                    self.engine_name, self.path, open_timeout_s)
        message = (
            f"no reader opened stream {self.path} ({self.engine_name}) within"
            f" {open_timeout_s:g} s; is its aggregator running? (streams.open_timeout_s)"
        )
        if self.engine_name == "sst":
            reserve_evpath_seed(self.path.parent)
        with open_deadline(open_timeout_s, message):
            self.engine = self.io.open(str(self.path), mode)

    def _variable(self, name: str, array: np.ndarray):
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
            self.engine.put(self._variable(name, array), array, _adios2().bindings.Mode.Sync)
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
        self.pending.append({name: np.array(value) for name, value in batch.items()})

    def flush(self) -> int:
        """Write what was collected as one step; returns its frame count."""
        if not self.pending:
            return 0
        batch = concat_batches(self.pending)
        self.pending.clear()
        super().write(batch)
        return len(next(iter(batch.values())))

    def close(self) -> None:
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


# --------------------------------------------------------------------------- reader


class FrameReader:
    """Reads batches from one stream, step by step, without re-reading."""

    def __init__(
        self,
        xml: Path,
        io_name: str,
        path: Path,
        open_timeout_s: float = 120.0,
        liveness_timeout_s: float = 30.0,
        skip_steps: int = 0,
    ):
        self.path = Path(path)
        self.liveness_timeout_s = liveness_timeout_s
        self.adios, self.io = declare_io(xml, io_name)
        self.engine_name = self.io.engine_type().lower()
        self.writer = WriterInfo.read(self.path)
        self.ended = False
        self.steps_read = 0
        self.get_seconds = 0.0
        if self.engine_name == "sst":
            reserve_evpath_seed(self.path.parent)
        try:
            self.engine = self.io.open(str(self.path), _adios2().bindings.Mode.Read)
        except (RuntimeError, ValueError) as error:
            raise StreamOpenTimeout(
                f"{self.path}: cannot open ({self.engine_name}): {_short(error)}"
            ) from None
        self.skipped = self._skip(skip_steps, open_timeout_s)

    def _skip(self, steps: int, timeout_s: float) -> int:
        """Step over `steps` steps without reading their data; returns how many were skipped."""
        StepStatus = _adios2().bindings.StepStatus
        for skipped in range(steps):
            status = self._begin_step(timeout_s)
            if status != StepStatus.OK:
                if status == StepStatus.EndOfStream:
                    self.ended = True
                return skipped
            self.engine.end_step()
        return steps

    def next(self, timeout_s: float = 0.0) -> Batch | None:
        """The next batch, or None if none arrived within `timeout_s` or the stream ended.

        Raises WriterDied when the writer went away without closing the stream.
        """
        if self.ended:
            return None
        status = self._begin_step(timeout_s)
        StepStatus = _adios2().bindings.StepStatus
        if status == StepStatus.OK:
            return self._read_step()
        if status == StepStatus.EndOfStream:
            self.ended = True
            return None
        if status == StepStatus.NotReady:
            self._check_writer_alive()
            return None
        raise WriterDied(f"{self.path}: stream failed ({status}); its writer probably died")

    def _begin_step(self, timeout_s: float):
        try:
            return self.engine.begin_step(_adios2().bindings.StepMode.Read, timeout_s)
        except (RuntimeError, ValueError) as error:
            raise WriterDied(f"{self.path}: stream broken: {_short(error)}") from None

    def _check_writer_alive(self) -> None:
        if not is_file_engine(self.engine_name):
            return  # SST reports a dead writer itself
        info = WriterInfo.read(self.path) or self.writer
        if info is not None and not info.alive(self.path, self.liveness_timeout_s):
            raise WriterDied(f"{self.path}: writer (pid {info.pid} on {info.host}) is gone")

    def _read_step(self) -> Batch:
        started = time.perf_counter()
        batch: Batch = {}
        for name, meta in self.io.available_variables().items():
            variable = self.io.inquire_variable(name)
            shape = variable.shape()
            out = np.empty(shape, dtype=_dtype(meta["Type"]))
            self.engine.get(variable, out, _adios2().bindings.Mode.Sync)
            batch[name] = out
        self.engine.end_step()
        self.steps_read += 1
        self.get_seconds += time.perf_counter() - started
        return batch

    def close(self) -> None:
        if getattr(self, "engine", None) is not None:
            try:
                self.engine.close()
            except (RuntimeError, ValueError) as error:
                logger.debug("closing %s: %s", self.path, _short(error))
            self.engine = None

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ADIOS_TYPES = {
    "int8_t": np.int8, "int16_t": np.int16, "int32_t": np.int32, "int64_t": np.int64,
    "uint8_t": np.uint8, "uint16_t": np.uint16, "uint32_t": np.uint32, "uint64_t": np.uint64,
    "float": np.float32, "double": np.float64, "char": np.int8,
}


def _dtype(adios_type: str) -> np.dtype:
    try:
        return np.dtype(_ADIOS_TYPES[adios_type])
    except KeyError:
        raise StreamError(f"unsupported ADIOS variable type {adios_type!r}") from None


def _short(error: Exception) -> str:
    """ADIOS messages carry colour codes and timestamps; keep the informative tail."""
    text = str(error).replace("\x1b", "")
    for marker in ("<ADIOS2 EXCEPTION>", "[ADIOS2 EXCEPTION]"):
        text = text.split(marker)[-1]
    for code in ("[0m", "[1;36m", "[1;34m"):
        text = text.replace(code, "")
    return " ".join(text.split())[:300]


# --------------------------------------------------------------------------- many streams


def stream_ready(path: Path, engine: str) -> WriterInfo | None:
    """The writer of `path` if it has opened the stream far enough for a reader to connect."""
    info = WriterInfo.read(path)
    if info is None:
        return None
    opened = (path / "md.idx").exists() if is_file_engine(engine) else contact_file(path).exists()
    return info if opened else None


@dataclass
class _Source:
    key: int
    path: Path
    reader: FrameReader | None = None
    finished_token: str | None = None  # writer we already read to the end (or saw die)
    frames: int = 0
    ends: int = 0
    deaths: int = 0
    reconnects: int = 0  # connection lost while the writer lived on (SST hiccup)
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
        reader = source.reader
        for _ in range(limit):
            try:
                batch = reader.next(0.0)
            except WriterDied as error:
                if self._writer_lives_on(source):
                    logger.warning("stream %d: %s; its writer is alive: reconnecting",
                                   source.key, error)
                    source.reconnects += 1
                    reader.close()
                    source.reader = None
                    return
                logger.warning("stream %d: %s", source.key, error)
                source.deaths += 1
                self._retire(source)
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

    def _writer_lives_on(self, source: _Source) -> bool:
        """Is the writer this reader was connected to still running (a connection hiccup)?"""
        known, current = source.reader.writer, WriterInfo.read(source.path)
        return (known is not None and current is not None and current.token == known.token
                and current.alive(source.path, self.liveness_timeout_s))

    def _retire(self, source: _Source) -> None:
        source.finished_token = source.reader.writer.token if source.reader.writer else None
        source.reader.close()
        source.reader = None

    @property
    def open_count(self) -> int:
        return sum(s.reader is not None for s in self.sources)

    @property
    def get_seconds(self) -> float:
        return sum(s.reader.get_seconds for s in self.sources if s.reader)

    def close(self) -> None:
        for source in self.sources:
            if source.reader is not None:
                source.reader.close()
                source.reader = None


# --------------------------------------------------------------------------- stores


class StoreReader:
    """Incremental reader of one growing BP store: each call returns only steps not read yet.

    Survives the store's writer restarting (reopens and steps over what it has read). Once it
    has read to the end, it reopens only after the store's index changed.
    """

    def __init__(self, xml: Path, io_name: str, path: Path, liveness_timeout_s: float = 30.0):
        self.xml, self.io_name, self.path = Path(xml), io_name, Path(path)
        self.liveness_timeout_s = liveness_timeout_s
        self.steps_read = 0
        self.opens = 0
        self.reader: FrameReader | None = None
        self._opened_signature: tuple[int, int] | None = None
        self._done_signature: tuple[int, int] | None = None

    def read_new(self, max_steps: int = 1_000_000) -> list[Batch]:
        if self.reader is None and not self._open():
            return []
        batches = []
        for _ in range(max_steps):
            try:
                batch = self.reader.next(0.0)
            except WriterDied as error:
                logger.info("store %s: %s; will reopen when it is written again", self.path, error)
                self._close()
                break
            if batch is None:
                if self.reader.ended:
                    self._close()
                break
            batches.append(batch)
            self.steps_read += 1
        return batches

    def _signature(self) -> tuple[int, int] | None:
        try:
            stat = (self.path / "md.idx").stat()
        except OSError:
            return None
        return stat.st_size, stat.st_mtime_ns

    def _open(self) -> bool:
        signature = self._signature()
        if signature is None or signature == self._done_signature:
            return False  # no store yet, or nothing new since we read to its end
        try:
            self.reader = FrameReader(self.xml, self.io_name, self.path, 5.0,
                                      self.liveness_timeout_s, skip_steps=self.steps_read)
        except StreamError as error:
            logger.debug("store %s not readable yet: %s", self.path, error)
            self.reader = None
            return False
        self.opens += 1
        self._opened_signature = signature
        return True

    def _close(self) -> None:
        # Whatever was in the store when we opened it has been read.
        self._done_signature = self._opened_signature
        self.reader.close()
        self.reader = None

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


def read_store(
    path: Path,
    variables: list[str] | None = None,
    xml: Path | None = None,
    io_name: str = "AggregatorOutput",
) -> Batch:
    """Every step written so far to a BP store, concatenated along frames."""
    return concat_batches(list(_iter_store(path, variables, xml, io_name)))


def _iter_store(
    path: Path, variables: list[str] | None, xml: Path | None, io_name: str
) -> Iterator[Batch]:
    """The steps of a store as far as they were written (also when its writer crashed)."""
    with _plain_bp5_xml(io_name) as plain:
        reader = FrameReader(xml or plain, io_name, path, open_timeout_s=5.0,
                             liveness_timeout_s=1e9)
        with reader:
            while True:
                try:
                    batch = reader.next(0.0)
                except WriterDied as error:
                    logger.warning("%s; reading what it wrote", error)
                    return
                if batch is None:
                    return
                if variables:
                    missing = [n for n in variables if n not in batch]
                    if missing:
                        raise StreamError(f"{path}: no variable(s) {missing}; has {sorted(batch)}")
                    batch = {n: batch[n] for n in variables}
                yield batch


@contextmanager
def _plain_bp5_xml(io_name: str) -> Iterator[Path]:
    """A throwaway XML that reads `io_name` with BP5, for tools given only a store path."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ddmd-xml-") as folder:
        xml = Path(folder) / "bp5.xml"
        xml.write_text(
            f'<adios-config><io name="{io_name}"><engine type="BP5"/></io></adios-config>'
        )
        yield xml


def concat_batches(batches: list[Batch]) -> Batch:
    if not batches:
        return {}
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


def describe_store(path: Path) -> list[tuple[str, str, str, int, int]]:
    """(name, dtype, shape of one frame, steps, frames) for each variable of a BP store."""
    rows: dict[str, list] = {}
    for batch in _iter_store(path, None, None, "AggregatorOutput"):
        for name, array in batch.items():
            row = rows.setdefault(name, [name, str(array.dtype), str(array.shape[1:]), 0, 0])
            row[3] += 1
            row[4] += array.shape[0]
    return [tuple(row) for _, row in sorted(rows.items())]


def _open_store_for_cli(path: Path) -> None:
    if not (path / "md.idx").exists():
        raise StreamError(f"{path}: not a BP store (no md.idx inside); give a *.bp folder")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ddmd_stream.streams", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("ls", help="list variables, types, shapes and steps of a BP store")
    ls.add_argument("store", type=Path)
    export = sub.add_parser("export", help="write variables of a BP store to HDF5 (.h5) or .npz")
    export.add_argument("store", type=Path)
    export.add_argument("output", type=Path)
    export.add_argument("--vars", nargs="*", default=None, help="variables (default: all)")
    args = parser.parse_args(argv)
    try:
        _open_store_for_cli(args.store)
        if args.command == "ls":
            rows = describe_store(args.store)
            for name, kind, shape, steps, frames in rows:
                print(f"{name:20s} {kind:8s} frame shape {shape:>12s}  steps {steps:6d}"
                      f"  frames {frames}")
            if not rows:
                print(f"{args.store}: no steps written yet")
            return 0
        export_format(args.output)
        data = read_store(args.store, args.vars)
        export_batch(data, args.output)
        frames = len(next(iter(data.values()), []))
        print(f"wrote {frames} frames of {sorted(data)} to {args.output}")
        return 0
    except StreamError as error:
        print(f"error: {error}", file=sys.stderr)
    except (RuntimeError, ValueError, OSError) as error:
        print(f"error: {args.store}: {_short(error)}", file=sys.stderr)
    return 2


def export_format(output: Path) -> str:
    """The export format ("h5" or "npz") named by the suffix of `output`."""
    if output.suffix in (".h5", ".hdf5"):
        return "h5"
    if output.suffix == ".npz":
        return "npz"
    raise StreamError(f"{output}: unknown export format (use .h5, .hdf5 or .npz)")


def export_batch(data: Batch, output: Path) -> None:
    if export_format(output) == "h5":
        import h5py

        with h5py.File(output, "w") as out:
            for name, array in data.items():
                out.create_dataset(name, data=array, compression="gzip")
    else:
        np.savez_compressed(output, **data)


if __name__ == "__main__":
    raise SystemExit(main())
