"""`FrameReporter`: an OpenMM reporter that turns simulation states into streamed frames."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import openmm.unit as unit

from ddmd_stream import frames as f
from ddmd_stream.frames import NM_TO_ANGSTROM, Schema, frame_schema
from ddmd_stream.md.geometry import contact_map, kabsch_rmsd

logger = logging.getLogger(__name__)

FrameValue = np.ndarray | np.generic | int | float
Frame = dict[str, FrameValue]


class FrameReporter:
    """Every `interval_steps` steps, build a frame (`ddmd_stream.frames`) and hand it to `sink`.

    Positions are never wrapped into the periodic box, so CA geometry stays whole.
    `segment_id` may be changed between segments; `seconds`/`count` time the `report` calls.
    """

    def __init__(
        self,
        interval_steps: int,
        sink: Callable[[Frame], None],
        ca_indices: np.ndarray,
        reference_ca_angstrom: np.ndarray,
        cutoff_angstrom: float = 8.0,
        positions: Literal["ca", "all"] | np.ndarray = "ca",
        contact_indices: np.ndarray | None = None,
        velocities: bool = True,
        box: bool = False,
        sim_id: int = 0,
        segment_id: int = 0,
        structure_id: int = 0,
    ) -> None:
        if interval_steps < 1:
            raise ValueError(f"interval_steps must be >= 1, got {interval_steps}")
        self.ca_indices = np.asarray(ca_indices, dtype=np.int64)
        self.position_indices = self._position_indices(positions)
        self.contact_indices = (self.ca_indices if contact_indices is None
                                else np.asarray(contact_indices, dtype=np.int64))
        self.reference_ca_angstrom = np.asarray(reference_ca_angstrom, dtype=np.float64)
        if self.reference_ca_angstrom.shape != (len(self.ca_indices), 3):
            raise ValueError(
                f"reference has {self.reference_ca_angstrom.shape[0]} CA positions but the "
                f"simulation has {len(self.ca_indices)} CA atoms (use a matching reference_pdb)"
            )
        self.interval_steps = interval_steps
        self.sink = sink
        self.cutoff_angstrom = cutoff_angstrom
        self.positions = positions
        self.velocities = velocities
        self.box = box
        self.sim_id = sim_id
        self.segment_id = segment_id
        self.structure_id = structure_id
        self.seconds = 0.0  # total time spent in report()
        self.count = 0  # frames reported

    def _position_indices(self, positions: str | np.ndarray) -> np.ndarray | None:
        """Atoms of the streamed `positions` (None: all)."""
        if isinstance(positions, str):
            if positions not in ("ca", "all"):
                raise ValueError(f"positions must be 'ca', 'all' or indices, got {positions!r}")
            return None if positions == "all" else self.ca_indices
        return np.asarray(positions, dtype=np.int64)

    def schema(self, n_atoms: int) -> Schema:
        """`frame_schema` for this reporter's settings and a system of `n_atoms` atoms."""
        n_selected = n_atoms if self.position_indices is None else len(self.position_indices)
        return frame_schema(n_atoms, n_selected, len(self.contact_indices), self.velocities,
                            self.box)

    def describeNextReport(self, simulation: Any) -> dict[str, Any]:  # OpenMM reporter API
        steps = self.interval_steps - simulation.currentStep % self.interval_steps
        include = ["positions", "velocities"] if self.velocities else ["positions"]
        # periodic=False: OpenMM must not wrap molecules into the box (enforcePeriodicBox).
        return {"steps": steps, "periodic": False, "include": include}

    def report(self, simulation: Any, state: Any) -> None:
        start = time.perf_counter()
        all_nm = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        all_angstrom = all_nm * NM_TO_ANGSTROM
        ca_angstrom = all_angstrom[self.ca_indices]
        indices = self.position_indices
        selected = all_angstrom if indices is None else all_angstrom[indices]
        frame: Frame = {
            f.POSITIONS: selected.astype(np.float32),
            f.CONTACT_MAP: contact_map(all_angstrom[self.contact_indices], self.cutoff_angstrom),
            f.RMSD: np.float32(kabsch_rmsd(ca_angstrom, self.reference_ca_angstrom)),
            f.STEP: np.int64(simulation.currentStep),
            f.TIME_PS: np.float64(state.getTime().value_in_unit(unit.picosecond)),
            f.WALL_TIME: np.float64(time.time()),
            f.SIM_ID: np.int64(self.sim_id),
            f.SEGMENT_ID: np.int64(self.segment_id),
            f.STRUCTURE_ID: np.int64(self.structure_id),
        }
        if self.velocities:
            frame[f.ALL_POSITIONS] = all_nm.astype(np.float32)
            velocities = state.getVelocities(asNumpy=True)
            frame[f.VELOCITIES] = np.asarray(
                velocities.value_in_unit(unit.nanometer / unit.picosecond), dtype=np.float32
            )
        if self.box:
            vectors = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
            frame[f.BOX] = np.asarray(vectors, dtype=np.float32)
        self.seconds += time.perf_counter() - start
        self.count += 1
        self.sink(frame)
