"""`FrameReader`: reads the batches of one stream step by step, only the variables asked for."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ddmd_stream.streams.adios import (
    Batch,
    adios_dtype,
    adios_message,
    declare_io,
    is_file_engine,
    load_adios2,
    open_engine,
    read_block,
)
from ddmd_stream.streams.errors import MissingVariables, WriterDied
from ddmd_stream.streams.liveness import WriterInfo
from ddmd_stream.streams.seeds import reserve_evpath_seed

logger = logging.getLogger(__name__)


class FrameReader:
    """Reads batches from one stream, step by step, without re-reading.

    `variables`: the names to read from each step (None or empty: all); the others are not
    read at all. A step lacking one of them raises MissingVariables (and is skipped).
    `open_timeout_s` bounds the wait for each of the `skip_steps` steps stepped over at open.
    """

    def __init__(
        self,
        xml: Path,
        io_name: str,
        path: Path,
        open_timeout_s: float = 120.0,
        liveness_timeout_s: float = 30.0,
        skip_steps: int = 0,
        variables: Sequence[str] | None = None,
    ):
        self.path = Path(path)
        self.liveness_timeout_s = liveness_timeout_s
        self.variables = list(variables) if variables else None
        self.adios, self.io = declare_io(xml, io_name)
        self.engine_name = self.io.engine_type().lower()
        self.writer = WriterInfo.read(self.path)
        self.ended = False
        self.steps_read = 0
        if self.engine_name == "sst":
            reserve_evpath_seed(self.path.parent)
        self.engine = open_engine(self.io, self.path, load_adios2().bindings.Mode.Read)
        self._skip(skip_steps, open_timeout_s)

    def _skip(self, steps: int, timeout_s: float) -> None:
        """Step over `steps` steps without reading their data (fewer if the stream has fewer)."""
        StepStatus = load_adios2().bindings.StepStatus
        for _ in range(steps):
            status = self._begin_step(timeout_s)
            if status != StepStatus.OK:
                self.ended = status == StepStatus.EndOfStream
                return
            self.engine.end_step()

    def next(self, timeout_s: float = 0.0) -> Batch | None:
        """The next batch, or None if none arrived within `timeout_s` or the stream ended.

        Raises WriterDied when the writer went away without closing the stream, and
        MissingVariables when the step lacks a requested variable.
        """
        if self.ended:
            return None
        status = self._begin_step(timeout_s)
        StepStatus = load_adios2().bindings.StepStatus
        if status == StepStatus.OK:
            return self._read_step()
        if status == StepStatus.EndOfStream:
            self.ended = True
            return None
        if status == StepStatus.NotReady:
            self._check_writer_alive()
            return None
        raise WriterDied(f"{self.path}: stream failed ({status}); its writer probably died")

    def _begin_step(self, timeout_s: float) -> Any:
        try:
            return self.engine.begin_step(load_adios2().bindings.StepMode.Read, timeout_s)
        except (RuntimeError, ValueError) as error:
            raise WriterDied(f"{self.path}: stream broken: {adios_message(error)}") from None

    def _check_writer_alive(self) -> None:
        if not is_file_engine(self.engine_name):
            return  # SST reports a dead writer itself
        info = WriterInfo.read(self.path) or self.writer
        if info is not None and not info.alive(self.path, self.liveness_timeout_s):
            raise WriterDied(f"{self.path}: writer (pid {info.pid} on {info.host}) is gone")

    def _read_step(self) -> Batch:
        """The requested variables of the current step (read now), ending the step."""
        available = self.io.available_variables()
        names = self.variables or list(available)
        missing = [name for name in names if name not in available]
        batch: Batch = {}
        if not missing:
            for name in names:
                variable = self.io.inquire_variable(name)
                batch[name] = np.empty(variable.shape(), adios_dtype(available[name]["Type"]))
                read_block(self.engine, variable, batch[name])
        self.engine.end_step()
        self.steps_read += 1
        if missing:
            raise MissingVariables(
                f"{self.path}: no variable(s) {missing} in a step; has {sorted(available)}")
        return batch

    def close(self) -> None:
        """Close the engine (errors of an already broken stream are only logged)."""
        if getattr(self, "engine", None) is not None:
            try:
                self.engine.close()
            except (RuntimeError, ValueError) as error:
                logger.debug("closing %s: %s", self.path, adios_message(error))
            self.engine = None

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
