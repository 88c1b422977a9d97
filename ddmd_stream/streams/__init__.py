"""Frames over ADIOS2: writers, readers, a multi-stream poller and BP store readers.

A *batch* (`Batch`) is a dict of numpy arrays that share a leading frame dimension K; a
simulation writes batches of one frame, an aggregator batches of many. Each ADIOS step holds one
batch. Engines and their parameters come only from the ADIOS XML.

| module | concept |
|---|---|
| `adios` | adios2 import, XML validation, engine lookup, opening, dtypes, `Batch` |
| `errors` | `StreamError`, `StreamOpenError`, `WriterDied`, `MissingVariables` |
| `liveness` | the `.writer`/`.reader` sidecars (`WriterInfo`, `ReaderInfo`), SST contact files |
| `delivery` | exactly once across reader restarts: greeting, acks, `StoredKeys` |
| `seeds` | distinct EVPath seeds for processes sharing a folder |
| `watchdog` | `open_deadline`: a time limit for blocking opens |
| `batches` | joining batches of per-structure shapes: `concat_batches`, `group_by_shape` … |
| `writer` | `FrameWriter`, `BatchingWriter` |
| `replay` | `ReplayingWriter`: holds and replays frames while its reader restarts |
| `reader` | `FrameReader` (only the variables asked for) |
| `poller` | `StreamPoller`: many streams, round robin |
| `pump` | `StreamPump`: one stream read in a process of its own (a hung writer blocks only it) |
| `store` | `StoreReader`, `read_store`, `read_rows`/`read_frames` (random access) |
| `__main__` | `python -m ddmd_stream.streams ls|export …` |
"""

from __future__ import annotations

from typing import Any

from ddmd_stream.streams.adios import (
    Batch,
    declare_io,
    engine_parameters,
    engine_type,
    is_file_engine,
    validate_xml,
)
from ddmd_stream.streams.batches import concat_batches, concat_ragged, group_by_shape, stack_frames
from ddmd_stream.streams.errors import (
    MissingVariables,
    ShapeMismatch,
    StreamError,
    StreamOpenError,
    WriterDied,
)
from ddmd_stream.streams.liveness import (
    ReaderInfo,
    WriterInfo,
    clean_stale_contact_files,
    contact_file,
    stream_ready,
)
from ddmd_stream.streams.poller import StreamPoller
from ddmd_stream.streams.reader import FrameReader
from ddmd_stream.streams.seeds import SEED_REGISTRY, reserve_evpath_seed
from ddmd_stream.streams.store import (
    StoreReader,
    describe_store,
    read_frames,
    read_rows,
    read_store,
)
from ddmd_stream.streams.watchdog import open_deadline
from ddmd_stream.streams.writer import BatchingWriter, FrameWriter

__all__ = [
    "SEED_REGISTRY", "Batch", "BatchingWriter", "FrameReader", "FrameWriter", "MissingVariables",
    "ReaderInfo", "ShapeMismatch", "StoreReader", "StreamError", "StreamOpenError",
    "StreamPoller", "WriterDied", "WriterInfo", "clean_stale_contact_files", "concat_batches",
    "concat_ragged",
    "contact_file", "declare_io", "describe_store", "engine_parameters", "engine_type",
    "group_by_shape", "is_file_engine", "main", "open_deadline", "read_frames", "read_rows",
    "read_store", "reserve_evpath_seed", "stack_frames", "stream_ready",
    "validate_xml",
]


def __getattr__(name: str) -> Any:
    """`main` (the CLI) on first use: importing `__main__` here eagerly would make
    `python -m ddmd_stream.streams` warn that it was imported before it ran."""
    if name == "main":
        from ddmd_stream.streams.__main__ import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
