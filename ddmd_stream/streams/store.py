"""BP stores (what aggregators write): incremental, whole and random-access reading."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ddmd_stream.streams.adios import (
    Batch,
    adios_dtype,
    declare_io,
    engine_type,
    is_file_engine,
    load_adios2,
    open_engine,
    read_block,
)
from ddmd_stream.streams.batches import concat_batches, concat_ragged, frames_array
from ddmd_stream.streams.errors import MissingVariables, StreamError, WriterDied
from ddmd_stream.streams.reader import FrameReader

logger = logging.getLogger(__name__)


class StoreReader:
    """Incremental reader of one growing BP store: each call returns only steps not read yet.

    Survives the store's writer restarting (reopens and steps over what it has read). Once it
    has read to the end, it reopens only after the store's index changed. Only `variables`
    (None: all) are read; a step lacking one of them is logged and skipped. Each batch is one
    step, so its frames agree in shape; batches of different steps need not.
    """

    def __init__(self, xml: Path, io_name: str, path: Path, liveness_timeout_s: float = 30.0,
                 variables: Sequence[str] | None = None):
        self.xml, self.io_name, self.path = Path(xml), io_name, Path(path)
        self.liveness_timeout_s = liveness_timeout_s
        self.variables = variables
        self.steps_read = 0
        self.opens = 0
        self.reader: FrameReader | None = None
        self._opened_signature: tuple[int, int] | None = None
        self._done_signature: tuple[int, int] | None = None

    def read_new(self, max_steps: int = 1_000_000) -> list[Batch]:
        """Up to `max_steps` batches written since the last call, oldest first."""
        return [batch for _, batch in self.read_new_steps(max_steps)]

    def read_new_steps(self, max_steps: int = 1_000_000) -> list[tuple[int, Batch]]:
        """As `read_new`, each batch with its step number in the store (for `read_rows`)."""
        if self.reader is None and not self._open():
            return []
        batches: list[tuple[int, Batch]] = []
        while len(batches) < max_steps:
            try:
                batch = self.reader.next(0.0)
            except WriterDied as error:
                logger.info("store %s: %s; will reopen when it is written again", self.path, error)
                self._close()
                break
            except MissingVariables as error:
                logger.warning("%s; step skipped", error)
                self.steps_read += 1
                continue
            if batch is None:
                if self.reader.ended:
                    self._close()
                break
            batches.append((self.steps_read, batch))
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
                                      self.liveness_timeout_s, skip_steps=self.steps_read,
                                      variables=self.variables)
        except StreamError as error:
            logger.debug("store %s not readable yet: %s", self.path, error)
            self.reader = None
            return False
        self.opens += 1
        self._opened_signature = signature
        return True

    def _close(self) -> None:
        """Close after reading to the end: whatever was in the store at open has been read."""
        self._done_signature = self._opened_signature
        self.close()

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


def read_store(
    path: Path,
    variables: Sequence[str] | None = None,
    xml: Path | None = None,
    io_name: str = "AggregatorOutput",
    ragged: bool = False,
) -> Batch:
    """Every step written so far to a BP store, concatenated along frames.

    A variable whose frame shape differs between steps (structures of different sizes) is a
    ShapeMismatch naming it, or with `ragged` an object array of per-frame arrays."""
    steps = list(_iter_store(path, variables, xml, io_name))
    return concat_ragged(steps) if ragged else concat_batches(steps)


def _iter_store(
    path: Path, variables: Sequence[str] | None, xml: Path | None, io_name: str
) -> Iterator[Batch]:
    """The steps of a store as far as they were written (also when its writer crashed).

    A step lacking one of `variables` raises MissingVariables."""
    with _reading_xml(xml, io_name) as config:
        reader = FrameReader(config, io_name, path, open_timeout_s=5.0, liveness_timeout_s=1e9,
                             variables=variables)
        with reader:
            while True:
                try:
                    batch = reader.next(0.0)
                except WriterDied as error:
                    logger.warning("%s; reading what it wrote", error)
                    return
                if batch is None:
                    return
                yield batch


@contextmanager
def _reading_xml(xml: Path | None, io_name: str, engine: str = "File") -> Iterator[Path]:
    """`xml`, or when None a throwaway XML that reads `io_name` with `engine` (for tools given
    only a store path; ADIOS's "File" engine detects the BP version, a BP5 reader given a BP4
    store waits forever)."""
    if xml is not None:
        yield Path(xml)
        return
    with tempfile.TemporaryDirectory(prefix="ddmd-xml-") as folder:
        plain = Path(folder) / "reader.xml"
        plain.write_text(
            f'<adios-config><io name="{io_name}"><engine type="{engine}"/></io></adios-config>'
        )
        yield plain


def read_rows(
    path: Path,
    step: int,
    rows: Sequence[int] | np.ndarray,
    variables: Sequence[str],
    xml: Path | None = None,
    io_name: str = "AggregatorOutput",
) -> Batch:
    """Frames `rows` (in that order) of step `step` (0-based, in write order) of a BP store.

    Only those rows of `variables` are read, by random access: the store may still be being
    appended to (what its writer has finished writing is visible). Each variable must be in
    every step of the store, so that step numbers mean the same for all of them.
    """
    wanted = np.asarray(rows, dtype=np.int64).reshape(-1)
    with _random_access(path, xml, io_name) as (io, engine):
        return {name: _variable_rows(io, engine, path, name, step, wanted) for name in variables}


def read_frames(
    path: Path,
    steps: Sequence[int] | np.ndarray,
    rows: Sequence[int] | np.ndarray,
    variables: Sequence[str],
    xml: Path | None = None,
    io_name: str = "AggregatorOutput",
) -> Batch:
    """Frame i = row `rows[i]` of step `steps[i]`, for every i: `read_rows` over many steps
    with one open of the store ({} when no frame is asked for).

    A variable whose frame shape differs between the steps asked for (structures of different
    sizes) comes as an object array of per-frame arrays: `batch[name][i]` is frame i's own."""
    steps = np.asarray(steps, dtype=np.int64).reshape(-1)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if not steps.size:
        return {}
    with _random_access(path, xml, io_name) as (io, engine):
        return {name: _frames_of(io, engine, path, name, steps, rows) for name in variables}


def _frames_of(io: Any, engine: Any, path: Path, name: str, steps: np.ndarray,
               rows: np.ndarray) -> np.ndarray:
    """Variable `name` at (steps[i], rows[i]) for every i (at least one), a read per step;
    an object array of per-frame arrays when the steps differ in its frame shape."""
    parts = {int(s): _variable_rows(io, engine, path, name, int(s), rows[steps == s])
             for s in np.unique(steps)}
    kinds = {(values.shape[1:], values.dtype) for values in parts.values()}
    if len(kinds) == 1:
        first = next(iter(parts.values()))
        out = np.empty((len(steps), *first.shape[1:]), first.dtype)
    else:
        out = np.empty(len(steps), dtype=object)
    for step, values in parts.items():
        out[steps == step] = values if len(kinds) == 1 else frames_array(values)
    return out


@contextmanager
def _random_access(path: Path, xml: Path | None, io_name: str) -> Iterator[tuple[Any, Any]]:
    """(IO, engine) of a BP store opened for random access ("rra")."""
    with _reading_xml(xml, io_name) as config:
        engine = engine_type(config, io_name)
        if not is_file_engine(engine):
            raise StreamError(f"{config}: {io_name} uses {engine}; random access needs a BP store")
        _adios, io = declare_io(config, io_name)
        opened = open_engine(io, path, load_adios2().bindings.Mode.ReadRandomAccess)
        try:
            yield io, opened
        finally:
            opened.close()


def _variable_rows(io: Any, engine: Any, path: Path, name: str, step: int,
                   rows: np.ndarray) -> np.ndarray:
    """`rows` of variable `name` in `step`, read run by run of consecutive rows."""
    variable = _step_variable(io, engine, path, name, step)
    frames, *frame_shape = variable.shape(step)
    if rows.size and (rows.min() < 0 or rows.max() >= frames):
        raise StreamError(f"{path}: step {step} has rows 0..{frames - 1}; asked for "
                          f"{rows[(rows < 0) | (rows >= frames)].tolist()}")
    unique, inverse = np.unique(rows, return_inverse=True)
    out = np.empty((len(unique), *frame_shape), adios_dtype(variable.type()))
    for first, count in _runs(unique):
        read_block(engine, variable, out[first:first + count],
                   start=[int(unique[first]), *[0] * len(frame_shape)])
    return out[inverse]


def _step_variable(io: Any, engine: Any, path: Path, name: str, step: int) -> Any:
    """Variable `name` with step `step` selected; StreamError if the store has no such step
    or variable, or the variable misses steps (its own step numbers would then differ)."""
    variable = io.inquire_variable(name)
    if variable is None:
        raise StreamError(f"{path}: no variable {name!r}; has {sorted(io.available_variables())}")
    steps = engine.steps()
    if variable.steps() != steps:
        raise StreamError(f"{path}: {name} is in only {variable.steps()} of {steps} steps; "
                          f"cannot tell which of them is step {step}")
    if not 0 <= step < steps:
        raise StreamError(f"{path}: no step {step} (written so far: {steps})")
    variable.set_step_selection([step, 1])
    return variable


def _runs(ascending: np.ndarray) -> Iterator[tuple[int, int]]:
    """(position, length) of each run of consecutive numbers in an ascending array."""
    if not ascending.size:
        return
    breaks = np.flatnonzero(np.diff(ascending) != 1) + 1
    for first, end in zip([0, *breaks], [*breaks, ascending.size], strict=True):
        yield int(first), int(end - first)


def describe_store(path: Path) -> list[tuple[str, str, str, int, int]]:
    """(name, dtype, shape of one frame, steps, frames) for each variable of a BP store.

    Any BP version: read with ADIOS's "File" engine, which detects it (a BP5 reader given a
    BP4 store waits for BP5 metadata that never comes)."""
    rows: dict[str, list] = {}
    with _reading_xml(None, "AggregatorOutput") as xml:
        for batch in _iter_store(path, None, xml, "AggregatorOutput"):
            for name, array in batch.items():
                row = rows.setdefault(name, [name, str(array.dtype), str(array.shape[1:]), 0, 0])
                row[3] += 1
                row[4] += array.shape[0] if array.ndim else 1  # a scalar: one value per step
    return [tuple(row) for _, row in sorted(rows.items())]
