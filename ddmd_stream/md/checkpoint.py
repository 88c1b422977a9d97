"""A simulation's checkpoint: one small `.npz` per simulation (`RunDir.sim_checkpoint`).

Written after every segment (and every `simulation.checkpoint_interval_ns`). A simulation
process started again — each stage of sequential mode, an engine restart after a crash, the
next job of a campaign (`--resume`) — continues from this state (positions, velocities, box,
step count, clock, segment, structure); in sequential mode it then restarts from the catalog.
Written to a temporary file, fsynced and renamed (`ddmd_stream.atomic`), so a task killed
mid-write leaves the previous state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm.unit as unit

from ddmd_stream.atomic import atomic_path


@dataclass(frozen=True)
class SimState:
    positions_nm: np.ndarray  # (atoms, 3)
    velocities_nm_ps: np.ndarray  # (atoms, 3)
    box_nm: np.ndarray | None  # (3, 3) periodic box vectors, None without a box
    step: int
    time_ps: float
    segment: int  # the segment the next stage runs
    structure_id: int


def save_state(path: Path, simulation, segment: int, structure_id: int) -> None:
    """Write the state of an OpenMM Simulation atomically to `path`."""
    state = simulation.context.getState(getPositions=True, getVelocities=True)
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    velocities = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    periodic = simulation.topology.getPeriodicBoxVectors() is not None
    box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as out:  # a file: np.savez adds no suffix
        np.savez(
            out,
            positions=np.asarray(positions, dtype=np.float64),
            velocities=np.asarray(velocities, dtype=np.float64),
            box=np.asarray(box, dtype=np.float64) if periodic else np.zeros((0, 3)),
            step=simulation.currentStep,
            time_ps=state.getTime().value_in_unit(unit.picosecond),
            segment=segment,
            structure_id=structure_id,
        )


def load_state(path: Path) -> SimState | None:
    """The state saved at `path`, or None when there is none yet."""
    if not path.is_file():
        return None
    with np.load(path) as data:
        box = data["box"]
        return SimState(
            positions_nm=data["positions"],
            velocities_nm_ps=data["velocities"],
            box_nm=box if box.size else None,
            step=int(data["step"]),
            time_ps=float(data["time_ps"]),
            segment=int(data["segment"]),
            structure_id=int(data["structure_id"]),
        )


def restore_state(simulation, state: SimState) -> None:
    """Put `state` into an OpenMM Simulation built for the same system."""
    context = simulation.context
    if state.box_nm is not None:
        context.setPeriodicBoxVectors(*(vector * unit.nanometer for vector in state.box_nm))
    context.setPositions(state.positions_nm * unit.nanometer)
    context.setVelocities(state.velocities_nm_ps * unit.nanometer / unit.picosecond)
    context.setTime(state.time_ps * unit.picosecond)
    simulation.currentStep = state.step
