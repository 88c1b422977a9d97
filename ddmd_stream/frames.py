"""The one definition of a frame: its fields, their dtypes, shapes and units.

A frame is what `md.reporter.FrameReporter` builds at every report interval. It travels as one
row of a *batch* (a dict of arrays sharing a leading frame dimension) over the simulation's SST
stream to an aggregator's BP store, where the trainer and the agent read it. Every consumer
takes field names and units from here; nothing converts units twice.

| field | dtype | shape | unit | what |
|---|---|---|---|---|
| `positions` | float32 | (selected, 3) | Å | the atoms `simulation.positions` selects |
| `contact_map` | uint8 | (n, n) | – | 1 where two `contact_atoms` are within the cutoff |
| `rmsd` | float32 | () | Å | Cα RMSD to the reference after Kabsch superposition |
| `step` | int64 | () | steps | the simulation's step count |
| `time_ps` | float64 | () | ps | the simulation's clock |
| `wall_time` | float64 | () | s | when the frame was made (Unix time; latency, global clock) |
| `sim_id` | int64 | () | – | which simulation |
| `segment_id` | int64 | () | – | which segment of that simulation |
| `structure_id` | int64 | () | – | which starting structure (topology) |
| `all_positions` | float32 | (atoms, 3) | nm | restart coordinates (with `stream_velocities`) |
| `velocities` | float32 | (atoms, 3) | nm/ps | restart velocities (with `stream_velocities`) |
| `box` | float32 | (3, 3) | nm | periodic box vectors (periodic systems: NPT boxes breathe) |

`all_positions` is in nm (OpenMM's unit, so a restart puts it back unconverted); `positions` in Å
(the unit of RMSD and contact cutoffs).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

POSITIONS = "positions"
CONTACT_MAP = "contact_map"
RMSD = "rmsd"
STEP = "step"
TIME_PS = "time_ps"
WALL_TIME = "wall_time"
SIM_ID = "sim_id"
SEGMENT_ID = "segment_id"
STRUCTURE_ID = "structure_id"
ALL_POSITIONS = "all_positions"
VELOCITIES = "velocities"
BOX = "box"

NM_TO_ANGSTROM = 10.0
ANGSTROM_TO_NM = 0.1

Schema = dict[str, tuple[np.dtype, tuple[int, ...]]]

# A frame's identity within its simulation as one int64: segment << STEP_BITS | step (2**40
# steps of 2 fs = 2 ms of MD). A simulation's keys only grow, across restarts and resumes.
STEP_BITS = 40


def frame_keys(segments: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """The identity keys of frames (segment_id, step)."""
    return (np.asarray(segments, np.int64) << STEP_BITS) | np.asarray(steps, np.int64)


def batch_keys(batch: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The identity keys of a batch's frames, or None when it lacks segment_id or step."""
    if SEGMENT_ID not in batch or STEP not in batch:
        return None
    return frame_keys(batch[SEGMENT_ID], batch[STEP]).reshape(-1)


# The per-frame bookkeeping every consumer may read (small: a few scalars per frame).
IDENTITY_FIELDS = (RMSD, SIM_ID, STEP, SEGMENT_ID, STRUCTURE_ID)


def frame_schema(n_atoms: int, n_selected: int, n_contact: int, velocities: bool,
                 box: bool = False) -> Schema:
    """dtype and shape of every field of a frame (scalars have shape ())."""
    schema: Schema = {
        POSITIONS: (np.dtype(np.float32), (n_selected, 3)),
        CONTACT_MAP: (np.dtype(np.uint8), (n_contact, n_contact)),
        RMSD: (np.dtype(np.float32), ()),
        STEP: (np.dtype(np.int64), ()),
        TIME_PS: (np.dtype(np.float64), ()),
        WALL_TIME: (np.dtype(np.float64), ()),
        SIM_ID: (np.dtype(np.int64), ()),
        SEGMENT_ID: (np.dtype(np.int64), ()),
        STRUCTURE_ID: (np.dtype(np.int64), ()),
    }
    if velocities:
        schema[ALL_POSITIONS] = (np.dtype(np.float32), (n_atoms, 3))
        schema[VELOCITIES] = (np.dtype(np.float32), (n_atoms, 3))
    if box:
        schema[BOX] = (np.dtype(np.float32), (3, 3))
    return schema


def restart_fields(stream_velocities: bool, positions: object, periodic: bool = False
                   ) -> list[str]:
    """The streamed fields that hold all-atom restart coordinates (empty: no restart possible).

    With `stream_velocities` these are `all_positions` (nm) and `velocities`; with all-atom
    `positions` (Å) the positions alone; with fewer atoms, nothing. Periodic systems add `box`."""
    if stream_velocities:
        fields = [ALL_POSITIONS, VELOCITIES]
    elif positions == "all":
        fields = [POSITIONS]
    else:
        return []
    return [*fields, BOX] if periodic else fields


def restart_state(restart: dict[str, np.ndarray]
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(positions nm, velocities nm/ps or None, box nm or None) of one frame's restart fields."""
    box = restart.get(BOX)
    if ALL_POSITIONS in restart:
        return restart[ALL_POSITIONS], restart[VELOCITIES], box
    return restart[POSITIONS] * ANGSTROM_TO_NM, None, box
