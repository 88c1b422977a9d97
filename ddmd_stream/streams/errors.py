"""The errors of the stream layer: all are `StreamError`s, hence `InputError`s (one clear line)."""

from __future__ import annotations

from ddmd_stream.errors import InputError


class StreamError(InputError):
    """A stream could not be opened, read or written; the message says which and why."""


class StreamOpenError(StreamError):
    """ADIOS refused to open a stream (missing store, no writer's contact file, bad engine …)."""


class WriterDied(StreamError):
    """The writer of a stream went away without closing it."""


class MissingVariables(StreamError):
    """A step lacks a variable the reader asked for (the step has been consumed)."""


class ShapeMismatch(StreamError):
    """Frames asked for together differ in the shape of a variable (e.g. structures of
    different atom counts); the message names the variable and the shapes."""
