"""Joining batches whose variables may differ in frame shape (structures of different sizes).

A step holds one batch, so its frames share every variable's shape; two steps need not (a
simulation that switched structure, two structures of one protein solvated differently). The
model input, rmsd and ids agree across structures of one protein; all_positions, velocities and
box need not.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from ddmd_stream.streams.adios import Batch
from ddmd_stream.streams.errors import ShapeMismatch

# A batch's shape signature: (name, shape of one frame, dtype) of each of its variables.
Signature = tuple[tuple[str, tuple[int, ...], str], ...]


def shape_signature(batch: Batch) -> Signature:
    """What must agree for two batches to be one step."""
    return tuple(sorted((name, a.shape[1:], a.dtype.str) for name, a in batch.items()))


def group_by_shape(batches: Sequence[tuple[Hashable, Batch]]) -> list[list[Batch]]:
    """(source, batch) pairs in arrival order → groups of batches of one shape signature.

    Groups come in order of their first batch; a source's batches stay in order across the
    groups (a batch never joins a group before one its source already used later)."""
    groups: list[tuple[Signature, list[Batch]]] = []
    last_group: dict[Hashable, int] = {}  # per source: the latest group it is in
    for source, batch in batches:
        signature = shape_signature(batch)
        earliest = last_group.get(source, 0)
        index = next((i for i in range(earliest, len(groups)) if groups[i][0] == signature),
                     None)
        if index is None:
            groups.append((signature, []))
            index = len(groups) - 1
        groups[index][1].append(batch)
        last_group[source] = index
    return [members for _, members in groups]


def frame_count(batch: Batch) -> int:
    """Frames in `batch` (the leading dimension its arrays share; 0 for no arrays)."""
    return len(next(iter(batch.values()), ()))


def concat_batches(batches: list[Batch]) -> Batch:
    """Batches with the same variables, joined along frames ({} for none); ShapeMismatch
    naming the variable when a variable's frame shape differs between them."""
    if not batches:
        return {}
    return {name: np.concatenate(_parts(batches, name, ragged=False)) for name in batches[0]}


def concat_ragged(batches: list[Batch]) -> Batch:
    """As `concat_batches`, but a variable whose frame shape differs between the batches comes
    as an object array with one array per frame (each of its own shape)."""
    if not batches:
        return {}
    return {name: join_frames(_parts(batches, name, ragged=True)) for name in batches[0]}


def _parts(batches: list[Batch], name: str, ragged: bool) -> list[np.ndarray]:
    """Variable `name` of every batch; ShapeMismatch when one lacks it, or (unless `ragged`)
    when its frame shape differs between them."""
    if any(name not in batch for batch in batches):
        raise ShapeMismatch(f"variable {name!r} is missing from some of the batches joined")
    parts = [batch[name] for batch in batches]
    shapes = sorted({part.shape[1:] for part in parts})
    if not ragged and len(shapes) > 1:
        raise ShapeMismatch(
            f"variable {name!r} differs in frame shape between steps: {_shapes(shapes)} "
            "(starting structures of different sizes); ask only for fields that agree across "
            "structures (model input, rmsd, ids), or read it per step or frame (read_frames)")
    return parts


def _shapes(shapes: list[tuple[int, ...]]) -> str:
    return ", ".join(str(shape) for shape in shapes)


def frames_array(frames: Sequence[np.ndarray]) -> np.ndarray:
    """A 1-d object array holding `frames` (arrays of any shapes) one per element."""
    out = np.empty(len(frames), dtype=object)
    for i, frame in enumerate(frames):
        out[i] = frame
    return out


def join_frames(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Arrays of frames joined in order: one array when their frame shapes and dtypes agree,
    else an object array of per-frame arrays."""
    if len({(p.dtype, p.shape[1:]) for p in parts}) == 1 and parts[0].dtype != object:
        return np.concatenate(parts)
    return frames_array([frame for part in parts for frame in part])


def stack_frames(values: np.ndarray) -> np.ndarray:
    """Frames of one shape as one array (object arrays of per-frame arrays are stacked);
    ShapeMismatch when they differ."""
    if values.dtype != object:
        return values
    shapes = sorted({np.shape(frame) for frame in values})
    if len(shapes) > 1:
        raise ShapeMismatch(f"frames differ in shape: {_shapes(shapes)}")
    return np.stack(list(values)) if len(values) else np.empty((0,))
