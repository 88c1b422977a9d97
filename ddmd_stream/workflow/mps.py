"""NVIDIA MPS control daemons for simulations that share a GPU (`resources.mps`).

Several OpenMM processes on one GPU only time-slice it; under MPS their kernels run at once
(FSD-EY on an H100: ~2,500 ns/day alone, ~10,000 in total for 8 under MPS; docs/gpu.md).

- Local runs (one node): the launcher starts `nvidia-cuda-mps-control -d` itself with
  `CUDA_MPS_PIPE_DIRECTORY=RUN/mps/pipe` and `CUDA_MPS_LOG_DIRECTORY=RUN/mps/log`, gives the
  simulation tasks the same two variables and stops the daemon (`echo quit |
  nvidia-cuda-mps-control`) on every way out of the run (`MpsDaemon`, launch.execute).
- Clusters: the launcher cannot reach the compute nodes, so the simulation tasks' `pre_exec`
  starts one daemon per node, idempotently (only when the node's pipe folder has no control
  socket; a start that fails, e.g. lost to another task, is not an error), under
  `RUN/mps/<host>/{pipe,log}`: a Unix socket on a shared file system is only
  reachable from the node that made it. Those daemons end with the job allocation.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from ddmd_stream.config import ResourcesConfig
from ddmd_stream.errors import InputError
from ddmd_stream.rundir import RunDir

logger = logging.getLogger(__name__)

MPS_CONTROL = "nvidia-cuda-mps-control"
CONTROL_SOCKET = "control"
PIPE_VAR = "CUDA_MPS_PIPE_DIRECTORY"
LOG_VAR = "CUDA_MPS_LOG_DIRECTORY"
NODE_WORD = "$(hostname)"
# sun_path holds 108 bytes with the final NUL; MPS makes sockets a few characters longer
# than `control` in the same folder, so leave room.
MAX_SOCKET_PATH = 96
COMMAND_TIMEOUT_S = 30.0


class MpsError(InputError):
    """The MPS daemon could not be started (the message says how to run without it)."""


def mps_env(run: RunDir, node: str = "") -> dict[str, str]:
    """The two variables that point an MPS daemon and its clients at one pipe/log folder."""
    return {PIPE_VAR: str(run.mps_pipe_dir(node)), LOG_VAR: str(run.mps_log_dir(node))}


def start_command() -> list[str]:
    return [MPS_CONTROL, "-d"]


def stop_command() -> list[str]:
    """Run with `quit` on stdin (the control program reads commands from it)."""
    return [MPS_CONTROL]


def node_pre_exec(run: RunDir) -> list[str]:
    """Shell lines that start this node's daemon unless it runs (cluster simulation tasks)."""
    env = mps_env(run, NODE_WORD)
    socket = f'"${PIPE_VAR}/{CONTROL_SOCKET}"'
    return [
        f"export {PIPE_VAR}={env[PIPE_VAR]} {LOG_VAR}={env[LOG_VAR]}",
        f'mkdir -p "${PIPE_VAR}" "${LOG_VAR}"',
        # `|| true`: a task that loses the race to start it finds the winner's daemon
        f"[ -S {socket} ] || {' '.join(start_command())} || true",
    ]


def sim_task_settings(resources: ResourcesConfig, run: RunDir) -> tuple[dict[str, str], list[str]]:
    """(environment, pre_exec lines) that attach a simulation task to its node's daemon."""
    if not resources.mps_enabled:
        return {}, []
    if resources.is_local:
        return mps_env(run), []
    return {}, node_pre_exec(run)


def launcher_starts_daemon(resources: ResourcesConfig) -> bool:
    """The launcher runs the daemon itself only on a local run (it is on the GPU node)."""
    return resources.mps_enabled and resources.is_local


def check_mps(resources: ResourcesConfig, run: RunDir) -> list[str]:
    """Problems with MPS for this config (one line each); empty when MPS is off or fine."""
    if not resources.mps_enabled:
        return []
    problems = []
    if resources.is_local and shutil.which(MPS_CONTROL) is None:
        problems.append(
            f"resources.mps: {MPS_CONTROL} is not on PATH (no NVIDIA driver here?); set "
            "resources.mps: off, or resources.sim.gpus: 0 to run simulations on CPUs"
        )
    node = "" if resources.is_local else "x" * 64  # room for a long host name
    socket = run.mps_pipe_dir(node) / CONTROL_SOCKET
    if len(str(socket)) > MAX_SOCKET_PATH:
        problems.append(
            f"resources.mps: the MPS socket {socket} would be longer than {MAX_SOCKET_PATH} "
            "characters (Unix socket limit); choose a shorter workflow.run_dir"
        )
    return problems


class MpsDaemon:
    """Starts the local MPS control daemon for a run and stops it again (context manager)."""

    def __init__(self, run: RunDir):
        self.run = run
        self.env = {**os.environ, **mps_env(run)}
        self.started = False

    @property
    def socket(self) -> Path:
        return self.run.mps_pipe_dir() / CONTROL_SOCKET

    def start(self) -> None:
        """Start the daemon unless one already serves this run's pipe folder."""
        if self.socket.is_socket():
            logger.info("MPS daemon already running (%s); using it", self.socket)
        else:
            try:
                self.run.mps_pipe_dir().mkdir(parents=True, exist_ok=True)
                self.run.mps_log_dir().mkdir(parents=True, exist_ok=True)
                self._control(start_command(), None)
            except (OSError, subprocess.SubprocessError) as error:
                detail = str(getattr(error, "stderr", None) or error).strip().splitlines()
                raise MpsError(
                    f"resources.mps: cannot start {MPS_CONTROL} -d ({' '.join(detail)}); "
                    "set resources.mps: off to share GPUs without MPS"
                ) from None
            logger.info("started the MPS daemon (pipe %s)", self.run.mps_pipe_dir())
        self.started = True

    def stop(self) -> None:
        """Ask the daemon to quit; never raises (it runs on every way out of a run)."""
        if not self.started:
            return
        self.started = False
        try:
            self._control(stop_command(), "quit\n")
            logger.info("stopped the MPS daemon")
        except (OSError, subprocess.SubprocessError) as error:
            logger.warning("could not stop the MPS daemon (%s): %s", self.socket, error)

    def _control(self, command: list[str], stdin: str | None) -> None:
        subprocess.run(
            command,
            input=stdin,
            env=self.env,
            text=True,
            check=True,
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
        )

    def __enter__(self) -> MpsDaemon:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
