"""`FrameReporter`: an OpenMM reporter that turns simulation states into streamed frames."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import openmm.unit as unit

from ddmd_stream.md.geometry import contact_map, kabsch_rmsd

logger = logging.getLogger(__name__)

FrameValue = np.ndarray | np.generic | int | float
Frame = dict[str, FrameValue]
Schema = dict[str, tuple[np.dtype, tuple[int, ...]]]

NM_TO_ANGSTROM = 10.0


def frame_schema(n_atoms: int, n_selected: int, n_residues_ca: int, velocities: bool) -> Schema:
    """dtype and shape of every key of a frame (scalars have shape ())."""
    schema: Schema = {
        "positions": (np.dtype(np.float32), (n_selected, 3)),  # Å, selected atoms
        "contact_map": (np.dtype(np.uint8), (n_residues_ca, n_residues_ca)),
        "rmsd": (np.dtype(np.float32), ()),  # Å, CA after Kabsch superposition
        "step": (np.dtype(np.int64), ()),
        "time_ps": (np.dtype(np.float64), ()),
        "sim_id": (np.dtype(np.int64), ()),
        "segment_id": (np.dtype(np.int64), ()),
        "structure_id": (np.dtype(np.int64), ()),  # which starting structure (topology)
    }
    if velocities:
        schema["all_positions"] = (np.dtype(np.float32), (n_atoms, 3))  # nm, for restarts
        schema["velocities"] = (np.dtype(np.float32), (n_atoms, 3))  # nm/ps, all atoms
    return schema


class FrameReporter:
    """Every `interval_steps` steps, build a frame (see `frame_schema`) and hand it to `sink`.

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
        positions: Literal["ca", "all"] = "ca",
        velocities: bool = True,
        sim_id: int = 0,
        segment_id: int = 0,
        structure_id: int = 0,
    ) -> None:
        if interval_steps < 1:
            raise ValueError(f"interval_steps must be >= 1, got {interval_steps}")
        if positions not in ("ca", "all"):
            raise ValueError(f"positions must be 'ca' or 'all', got {positions!r}")
        self.ca_indices = np.asarray(ca_indices, dtype=np.int64)
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
        self.sim_id = sim_id
        self.segment_id = segment_id
        self.structure_id = structure_id
        self.seconds = 0.0  # total time spent in report()
        self.count = 0  # frames reported

    def schema(self, n_atoms: int) -> Schema:
        """`frame_schema` for this reporter's settings and a system of `n_atoms` atoms."""
        n_selected = n_atoms if self.positions == "all" else len(self.ca_indices)
        return frame_schema(n_atoms, n_selected, len(self.ca_indices), self.velocities)

    def describeNextReport(self, simulation: Any) -> dict[str, Any]:  # OpenMM reporter API
        steps = self.interval_steps - simulation.currentStep % self.interval_steps
        include = ["positions", "velocities"] if self.velocities else ["positions"]
        # periodic=False: OpenMM must not wrap molecules into the box (enforcePeriodicBox).
        return {"steps": steps, "periodic": False, "include": include}

    def report(self, simulation: Any, state: Any) -> None:
        start = time.perf_counter()
        all_nm = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        ca_angstrom = all_nm[self.ca_indices] * NM_TO_ANGSTROM
        selected = all_nm * NM_TO_ANGSTROM if self.positions == "all" else ca_angstrom
        frame: Frame = {
            "positions": selected.astype(np.float32),
            "contact_map": contact_map(ca_angstrom, self.cutoff_angstrom),
            "rmsd": np.float32(kabsch_rmsd(ca_angstrom, self.reference_ca_angstrom)),
            "step": np.int64(simulation.currentStep),
            "time_ps": np.float64(state.getTime().value_in_unit(unit.picosecond)),
            "sim_id": np.int64(self.sim_id),
            "segment_id": np.int64(self.segment_id),
            "structure_id": np.int64(self.structure_id),
        }
        if self.velocities:
            frame["all_positions"] = all_nm.astype(np.float32)
            velocities = state.getVelocities(asNumpy=True)
            frame["velocities"] = np.asarray(
                velocities.value_in_unit(unit.nanometer / unit.picosecond), dtype=np.float32
            )
        self.seconds += time.perf_counter() - start
        self.count += 1
        self.sink(frame)
