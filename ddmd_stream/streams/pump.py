"""`StreamPump`: one stream read in a process of its own, its batches sent back over a pipe.

Every ADIOS call that can block on one writer (an SST open while the writer is stopped in its
handshake, begin_step/end_step waiting on a stopped writer's data, close) holds the GIL, so
neither a thread nor a timeout can keep it from stalling a process. A pump process confines
it: the poller only reads pipes, and a pump stuck on a half-dead writer stalls only itself.

Messages from a pump, in order: ("opened",) | ("open_failed", why); then ("batches", [batch…])…;
last ("ended",) or ("lost", why, writer_alive). A pump exits on its own after its last message,
and when its pipe is closed (a stop request, or its poller gone). The poller acks each
("batches", …) message, and a pump reads no more steps until it has the ack: what a pump holds is
bounded as before (one message), so a slow aggregator still blocks its simulations through
SST's QueueLimit instead of letting frames age in socket buffers (measured: p50 latency 8.8 s
without the ack, benchmarks/RESULTS.md).

A pump records itself beside the stream (`.reader`: before its open, and `connected` after):
a writer with the handshake (`streams.replay`) holds its frames while that reader is gone and
greets the next one; the pump drops the steps before its greeting (`streams.delivery`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import multiprocessing.util
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, replace
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

from ddmd_stream.streams.adios import Batch
from ddmd_stream.streams.delivery import hello_id, hello_of
from ddmd_stream.streams.errors import StreamError, WriterDied
from ddmd_stream.streams.liveness import ReaderInfo, WriterInfo
from ddmd_stream.streams.reader import FrameReader

logger = logging.getLogger(__name__)

# A pump re-runs the poller's main module as __mp_main__ (multiprocessing does so), which the
# forkserver has preloaded under its own name: harmless, but runpy warns about it on stderr.
warnings.filterwarnings("ignore", r".* found in sys\.modules after import of package",
                        RuntimeWarning, "runpy")

MAX_BATCHES_PER_MESSAGE = 8  # steps a pump sends at once, then waits for the poller's ack
MAX_STEPS_PER_READ = 64  # steps a pump reads at once (most may be empty: a writer holding)
HEARTBEAT_S = 1.0  # least time between touches of the pump's `.reader` sidecar
IDLE_SLEEP_S = (0.005, 0.05)  # a pump with nothing to read sleeps from this to this long
MAX_SOCKET_DIR_CHARS = 60  # room for pymp-XXXX/listener-XXXX in a 108-byte AF_UNIX path
STOP_GRACE_S = 5.0  # a stopped pump that does not exit by then is killed (stuck in ADIOS)


@dataclass(frozen=True)
class PumpSpec:
    """What a pump process needs to read one stream."""

    xml: Path
    io_name: str
    path: Path
    writer: WriterInfo
    open_timeout_s: float
    liveness_timeout_s: float


def _context() -> BaseContext:
    """Pumps fork from a clean forkserver (the poller's process may hold ADIOS threads) that
    has imported adios2 and the main module once, so a pump starts in milliseconds."""
    context = multiprocessing.get_context("forkserver")
    main = getattr(sys.modules["__main__"].__spec__, "name", None)
    extra = [main] if main and not main.endswith("__main__") else []
    context.set_forkserver_preload([__name__, "adios2", *extra])
    return context


def start_forkserver() -> None:
    """Start the pumps' forkserver now (importing adios2 takes seconds on a busy machine), so
    the first stream opens without waiting for it."""
    _context()
    _short_socket_dir()
    multiprocessing.forkserver.ensure_running()


def _short_socket_dir() -> None:
    """The forkserver listens on a Unix socket in multiprocessing's temporary folder, whose
    path must stay under ~100 bytes; a task's TMPDIR on node-local scratch can be longer."""
    config = multiprocessing.current_process()._config  # where multiprocessing caches it
    if "tempdir" in config or len(tempfile.gettempdir()) <= MAX_SOCKET_DIR_CHARS:
        return
    short = tempfile.mkdtemp(prefix="pymp-", dir="/tmp" if os.path.isdir("/tmp") else None)
    config["tempdir"] = short
    multiprocessing.util.Finalize(None, shutil.rmtree, args=(short, True), exitpriority=-100)


class StreamPump:
    """The poller's handle on one pump process."""

    def __init__(self, spec: PumpSpec):
        self.spec = spec
        self.connection, child = multiprocessing.Pipe()  # a socket pair: the pump sees it close
        self.process = _context().Process(
            target=pump_main, args=(spec, child), name=f"pump-{spec.path.name}", daemon=True
        )
        self.process.start()
        child.close()
        self.done = False  # its last message came (or it died)
        self.deadline = float("inf")  # when a stopped pump is killed

    def messages(self, limit: int) -> list[tuple[Any, ...]]:
        """Up to `limit` messages that have arrived, without waiting; a pump that died without
        a last message reads as ("lost", why, writer_alive)."""
        got: list[tuple[Any, ...]] = []
        while not self.done and len(got) < limit and self.connection.poll(0):
            try:
                got.append(self.connection.recv())
            except (EOFError, OSError):
                got.append(self._died())
                break
            if got[-1][0] == "batches":
                self._ack()
            self.done = got[-1][0] in ("ended", "lost", "open_failed")
        return got

    def _ack(self) -> None:
        """Let the pump read on (a pump that just died shows as EOF on the next read)."""
        with contextlib.suppress(OSError):
            self.connection.send(("ack",))

    def _died(self) -> tuple[Any, ...]:
        """The last message of a pump that ended without one (it crashed or was killed):
        its stream is lost, and reopened if its writer lives on."""
        self.done = True
        self.process.join(0.1)  # for its exit code
        why = f"{self.spec.path}: reader process ended (exit code {self.process.exitcode})"
        return ("lost", why, writer_lives_on(self.spec.writer, self.spec.path,
                                             self.spec.liveness_timeout_s))

    def request_stop(self) -> None:
        """Ask the pump to end: it sees its pipe close, closes its stream and exits."""
        self.connection.close()
        self.deadline = time.monotonic() + STOP_GRACE_S

    def reaped(self) -> bool:
        """Has a stopped pump exited (reaped now)? One stuck in ADIOS past its grace (a
        half-dead writer) is killed. Never waits."""
        if self.process.is_alive() and time.monotonic() < self.deadline:
            return False
        if self.process.is_alive():
            logger.warning("reader of %s did not exit within %.0f s; killing it", self.spec.path,
                           STOP_GRACE_S)
            self.process.kill()
        self.process.join()
        self.process.close()
        return True


def pump_main(spec: PumpSpec, connection: multiprocessing.connection.Connection) -> None:
    """The pump process: open the stream, send every batch, then the stream's end."""
    parent = os.getppid()  # the forkserver, which ends with the poller's process
    me = ReaderInfo(os.getpid(), socket.gethostname(), uuid.uuid4().hex)
    me.write(spec.path)  # before the open: the writer holds its frames for us from now on
    try:
        reader = FrameReader(spec.xml, spec.io_name, spec.path, spec.open_timeout_s,
                             spec.liveness_timeout_s)
    except StreamError as error:
        _send(connection, ("open_failed", str(error)))
        return
    reader.writer = spec.writer
    greeting = _Greeting(hello_id(me.token), spec.writer.handshake)
    me = replace(me, connected=True)
    me.write(spec.path)
    try:
        if _send(connection, ("opened",)):
            _pump(reader, connection, parent, _Heartbeat(me, spec.path), greeting)
    finally:
        reader.close()


@dataclass
class _Greeting:
    """A writer with the handshake greets its reader; the steps before the greeting were
    written for no one (or for the reader before) and are replayed after it."""

    hello: int
    expected: bool
    greeted: bool = False

    def passes(self, batch: Batch) -> bool:
        """Is `batch` frames for this reader (not a greeting, empty step or unheard step)?"""
        hello = hello_of(batch)
        if hello is not None:
            self.greeted = self.greeted or hello == self.hello
            return False
        return bool(batch) and (self.greeted or not self.expected)


@dataclass
class _Heartbeat:
    """The pump's `.reader` sidecar, touched every HEARTBEAT_S (for writers on other hosts)."""

    info: ReaderInfo
    path: Path
    last: float = 0.0

    def beat(self) -> None:
        now = time.monotonic()
        if now - self.last >= HEARTBEAT_S:
            self.info.touch(self.path)
            self.last = now


def _pump(reader: FrameReader, connection: Any, parent: int, heartbeat: _Heartbeat,
          greeting: _Greeting) -> None:
    """Send batches until the stream ends, breaks, or the poller stops listening.

    Steps are polled with begin_step(timeout=0), as the poller did in-process (a timed SST
    begin_step is a path this project has not tested), with a short backoff when idle.
    """
    idle_s = IDLE_SLEEP_S[0]
    while os.getppid() == parent:
        heartbeat.beat()
        batches, broken = _read_available(reader, greeting)
        if batches:
            if not _send(connection, ("batches", batches)) or not _acked(connection, parent):
                return
            idle_s = IDLE_SLEEP_S[0]
        if broken is not None:
            alive = writer_lives_on(reader.writer, reader.path, reader.liveness_timeout_s)
            _send(connection, ("lost", str(broken), alive))
            return
        if batches:
            continue
        if reader.ended:
            _send(connection, ("ended",))
            return
        if not _poller_listening(connection):
            return
        time.sleep(idle_s)
        idle_s = min(idle_s * 2, IDLE_SLEEP_S[1])


def _read_available(reader: FrameReader, greeting: _Greeting
                    ) -> tuple[list[Batch], WriterDied | None]:
    """The frames of the steps available now (at most MAX_STEPS_PER_READ steps, of which at
    most MAX_BATCHES_PER_MESSAGE with frames), and the break if the stream broke after them."""
    batches: list[Batch] = []
    for _ in range(MAX_STEPS_PER_READ):
        try:
            batch = reader.next(0.0)
        except WriterDied as error:
            return batches, error
        if batch is None:
            break
        if greeting.passes(batch):
            batches.append(batch)
            if len(batches) >= MAX_BATCHES_PER_MESSAGE:
                break
    return batches, None


def _acked(connection: Any, parent: int) -> bool:
    """Wait for the poller's ack of the last message; False when it stopped listening."""
    while os.getppid() == parent:
        try:
            if connection.poll(IDLE_SLEEP_S[1]):
                return connection.recv() == ("ack",)
        except (EOFError, OSError):
            return False
    return False


def writer_lives_on(known: WriterInfo | None, path: Path, liveness_timeout_s: float) -> bool:
    """Is the writer `known` of stream `path` still running (a connection hiccup)?"""
    current = WriterInfo.read(path)
    return (known is not None and current is not None and current.token == known.token
            and current.alive(path, liveness_timeout_s))


def _poller_listening(connection: Any) -> bool:
    """The poller closes its end to stop a pump; a closed pipe reads as ready."""
    try:
        return not connection.poll(0)
    except (EOFError, OSError):
        return False


def _send(connection: Any, message: tuple[Any, ...]) -> bool:
    """Send one message; False when the poller is gone."""
    try:
        connection.send(message)
    except (BrokenPipeError, EOFError, OSError):
        return False
    return True
