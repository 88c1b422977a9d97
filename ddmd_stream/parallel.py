"""The agent across MPI ranks (`resources.agent.ranks` > 1; mpi4py is imported only then).

Rank 0 runs the agent as with one rank: it reads the window, keeps the latent cache, detects,
ranks and publishes. Only the encoding is shared: when the cache asks for latents, rank 0 sends
each other rank a contiguous share of the frames' model input, encodes its own share and
receives the others' latents in order, so the latents (and so the catalog) are those of one
rank. Other ranks load the model version rank 0 names and wait for its next command; its
`stop` ends them all together (STOP, deadline or signal). A rank that fails aborts all of
them (`MPI_Abort`): a rank left waiting for a dead one would never end.

Waiting ranks poll non-blocking requests with a short sleep instead of blocking in MPI, whose
busy-polling would take a core from the ranks that work.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ddmd_stream.events import EventRecorder

if TYPE_CHECKING:
    from ddmd_stream.ml.base import LatentModel
    from ddmd_stream.task import TaskContext

logger = logging.getLogger(__name__)

COMMAND, INPUT, LATENTS = 1, 2, 3  # message tags
WORKER_POLL_S = 0.05  # how often an idle rank looks for a command
ROOT_POLL_S = 0.001  # how often rank 0 looks whether the shares came back


def mpiexec_beside(python: str) -> str | None:
    """The `mpiexec` of `python`'s environment (the `mpich` wheel puts one there), else PATH's."""
    candidate = Path(python).parent / "mpiexec"
    return str(candidate) if candidate.is_file() else shutil.which("mpiexec")


def world() -> Any:
    """MPI.COMM_WORLD (imports mpi4py, which initialises MPI)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD


def wait_all(requests: list[Any], poll_s: float) -> None:
    """Wait for MPI requests by polling (no busy wait inside MPI)."""
    pending = list(requests)
    while pending:
        pending = [r for r in pending if not r.Test()]
        if pending:
            time.sleep(poll_s)


class SharedEncoder:
    """Rank 0's stand-in for a model in `LatentCache.encode`: encodes across all ranks."""

    def __init__(self, comm: Any, model: LatentModel, version: int, path: Path):
        self.comm, self.model, self.version, self.path = comm, model, version, path

    @property
    def input_field(self) -> str:
        return self.model.input_field

    def encode(self, inputs: np.ndarray, batch_size: int) -> np.ndarray:
        """Latents of `inputs`: a contiguous share per rank, in order."""
        size = self.comm.Get_size()
        if len(inputs) < size:
            return self.model.encode(inputs, batch_size)
        shares = np.array_split(inputs, size)
        sends = []
        for rank, share in enumerate(shares[1:], start=1):
            share = np.ascontiguousarray(share)
            self.comm.send(("encode", self.version, str(self.path), batch_size, share.shape,
                            share.dtype.str), dest=rank, tag=COMMAND)
            sends.append(self.comm.Isend(share, dest=rank, tag=INPUT))
        mine = np.ascontiguousarray(self.model.encode(shares[0], batch_size), np.float32)
        theirs = [np.empty((len(s), *mine.shape[1:]), np.float32) for s in shares[1:]]
        receives = [self.comm.Irecv(buffer, source=rank, tag=LATENTS)
                    for rank, buffer in enumerate(theirs, start=1)]
        wait_all(sends + receives, ROOT_POLL_S)
        return np.concatenate([mine, *theirs])


def abort_all_ranks_on_failure(code: int) -> int:
    """After `run_task` has logged a failure and returned its exit `code`: abort every rank
    (MPI_Abort), as one left waiting for a dead rank would never end. Else returns `code`."""
    mpi = sys.modules.get("mpi4py.MPI")  # imported only with ranks > 1
    if code != 0 and mpi is not None and mpi.COMM_WORLD.Get_size() > 1:
        logger.error("rank %d ended with exit status %d: aborting all ranks",
                     mpi.COMM_WORLD.Get_rank(), code)
        logging.shutdown()
        mpi.COMM_WORLD.Abort(code)
    return code


def stop_workers(comm: Any) -> None:
    """Tell every other rank to end (rank 0, when its agent ends for whatever reason)."""
    for rank in range(1, comm.Get_size()):
        comm.send(("stop",), dest=rank, tag=COMMAND)


def quiet_worker_context(ctx: TaskContext, rank: int) -> None:
    """A worker rank keeps its status and events in `tasks/agent-0000/rank-R/`, so that the
    task's own files (read by the live view and the report) stay rank 0's."""
    ctx.dir = ctx.dir / f"rank-{rank}"
    ctx.dir.mkdir(parents=True, exist_ok=True)
    ctx.events = EventRecorder(ctx.dir / "events.jsonl", f"{ctx.name}.{rank}")


def receive_command(comm: Any) -> tuple:
    request = comm.irecv(source=0, tag=COMMAND)
    while True:
        done, command = request.test()
        if done:
            return command
        time.sleep(WORKER_POLL_S)


def worker_loop(ctx: TaskContext, comm: Any) -> None:
    """A rank > 0: encode the shares rank 0 sends until it says stop."""
    from ddmd_stream.ml.base import load_model

    quiet_worker_context(ctx, comm.Get_rank())
    model, loaded = None, 0
    while (command := receive_command(comm))[0] != "stop":
        _, version, path, batch_size, shape, dtype = command
        share = np.empty(shape, np.dtype(dtype))
        wait_all([comm.Irecv(share, source=0, tag=INPUT)], ROOT_POLL_S)
        if version != loaded:
            model, loaded = load_model(Path(path)), version
            logger.info("rank %d: loaded model v%d", comm.Get_rank(), version)
        with ctx.events.span("encode", frames=len(share), model_version=version):
            latents = np.ascontiguousarray(model.encode(share, batch_size), np.float32)
        wait_all([comm.Isend(latents, dest=0, tag=LATENTS)], ROOT_POLL_S)
    ctx.events.event("stop", reason="rank 0")
