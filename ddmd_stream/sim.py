"""Simulation task (`python -m ddmd_stream.sim -c TASK.yaml`): segments of OpenMM MD that stream
frames; restarts from the outlier catalog between segments.

Every frame handed to the stream is recorded in the simulation's ledger (`accounting.py`). The
state is checkpointed after every segment (and every `checkpoint_interval_ns`); a simulation
started again (an engine restart after a crash, `--resume` after a walltime kill) continues
from its checkpoint, numbering its frames after the last one in its ledger, so no identity
(segment, step) is ever streamed twice."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import openmm.unit as unit

from ddmd_stream.accounting import FrameLedger, last_recorded
from ddmd_stream.catalog import OutlierCatalog, OutlierRecord, pick_restart
from ddmd_stream.frames import RMSD, SEGMENT_ID, STEP
from ddmd_stream.md.checkpoint import SimState, load_state, restore_state, save_state
from ddmd_stream.md.geometry import ca_indices, select_atoms
from ddmd_stream.md.reporter import Frame, FrameReporter
from ddmd_stream.md.system import (
    build_simulation,
    load_pdb,
    prepare_start,
    reference_ca_angstrom,
)
from ddmd_stream.streams import BatchingWriter, FrameWriter, engine_type
from ddmd_stream.streams.replay import ReplayingWriter, replay_supported
from ddmd_stream.task import TaskContext, run_task

logger = logging.getLogger(__name__)

STEPS_PER_CALL = 500  # bound on steps between stop checks
CONSTRAINT_TOLERANCE = 1e-5  # relative, as OpenMM's integrators use


@dataclass
class SegmentTimes:
    """Where one segment's wall time went."""

    total: float = 0.0
    reporter: float = 0.0
    put: float = 0.0

    @property
    def md(self) -> float:
        return max(0.0, self.total - self.reporter - self.put)


class StreamingSimulation:
    """One simulation: builds the system, streams frames, restarts between segments."""

    def __init__(self, ctx: TaskContext):
        self.ctx = ctx
        self.config = ctx.config.simulation
        self.sim_id = ctx.index
        self.seed = None if self.config.seed is None else self.config.seed + self.sim_id
        self.rng = np.random.default_rng(self.seed)
        self.reference = reference_ca_angstrom(self.config.reference_pdb or self.config.pdb_file)
        self.catalog = OutlierCatalog(ctx.run.catalog_file)
        self.writer: FrameWriter | None = None
        self.ledger = FrameLedger(ctx.run.sim_ledger(self.sim_id))
        self.unrecorded: list[tuple[int, int]] = []  # handed to a batching writer, not flushed
        self.checkpoint_steps = self._checkpoint_steps()
        self.last_checkpoint_step = 0
        self.min_rmsd = float("inf")
        self.structure_id, self.structure = self.config.structure_for(self.sim_id)
        self.load_structure(self.structure_id)

    def load_structure(self, structure_id: int) -> None:
        """(Re)build the simulation from starting structure `structure_id`, keeping the clock."""
        previous = getattr(self, "simulation", None)
        segment = self.reporter.segment_id if previous is not None else 0
        self.structure_id, self.structure = structure_id, self.config.structures()[structure_id]
        self.simulation, self.platform = build_simulation(
            self.config, load_pdb(self.structure), seed=self.seed
        )
        if previous is not None:
            self.simulation.currentStep = previous.currentStep
            self.simulation.context.setTime(previous.context.getState().getTime())
        self.ctx.events.event("platform", platform=self.platform, structure=str(self.structure))
        self.ctx.update_status(platform=self.platform, structure=str(self.structure))
        topology = self.simulation.topology
        self.reporter = FrameReporter(
            self.config.steps_per_report,
            self._send,
            ca_indices(topology),
            self.reference,
            cutoff_angstrom=self.config.contact_cutoff_angstrom,
            positions=self._positions(topology),
            contact_indices=select_atoms(topology, self.config.contact_atoms),
            velocities=self.config.stream_velocities,
            box=self.simulation.system.usesPeriodicBoundaryConditions(),
            sim_id=self.sim_id,
            segment_id=segment,
            structure_id=structure_id,
        )
        self.simulation.reporters.append(self.reporter)

    def _positions(self, topology: Any) -> str | np.ndarray:
        """The reporter's `positions`: "ca", "all" or the indices of the configured atoms."""
        selection = self.config.positions
        return selection if selection in ("ca", "all") else select_atoms(topology, selection)

    def _checkpoint_steps(self) -> int | None:
        """Steps between checkpoints within a segment (None: at segment ends only)."""
        interval_ns = self.config.checkpoint_interval_ns
        if interval_ns is None:
            return None
        return max(1, round(interval_ns * 1e6 / self.config.timestep_fs))

    def _send(self, frame: Frame) -> None:
        self.writer.write({name: np.asarray(value)[None] for name, value in frame.items()})
        self.unrecorded.append((int(frame[SEGMENT_ID]), int(frame[STEP])))
        if not isinstance(self.writer, BatchingWriter):  # in the stream now
            self._record_sent()
        self.min_rmsd = min(self.min_rmsd, float(frame[RMSD]))

    def _record_sent(self) -> None:
        self.ledger.record_many(self.unrecorded)
        self.unrecorded.clear()

    def open_stream(self) -> None:
        streams = self.ctx.config.streams
        if self.ctx.config.workflow.mode == "sequential":  # own store, one step per segment
            self.writer = BatchingWriter(
                streams.adios_xml, streams.aggregator_io, self.ctx.run.sim_store(self.sim_id),
                streams.open_timeout_s, append=True)
            return
        path = self.ctx.run.sim_stream(self.sim_id)
        if not replay_supported(engine_type(streams.adios_xml, streams.simulation_io)):
            self.writer = FrameWriter(streams.adios_xml, streams.simulation_io, path,
                                      streams.open_timeout_s, stop_file=self.ctx.run.stop_file)
            return
        self.writer = ReplayingWriter(  # no frame lost while the aggregator restarts
            streams.adios_xml, streams.simulation_io, path, streams.open_timeout_s,
            stop_file=self.ctx.run.stop_file, liveness_timeout_s=streams.liveness_timeout_s,
            should_stop=self.ctx.should_stop)

    def run(self) -> None:
        if self.ctx.should_stop():  # stopped while starting: no stream to open for nothing
            logger.info("stopped before the first segment")
            return
        self.open_stream()
        try:
            segment = self.resume()
            while not self.ctx.should_stop():
                self.run_segment(segment)
                segment += 1
                if self.ctx.once:  # sequential mode: one segment per stage
                    self.checkpoint(segment)
                    break
                if not self.ctx.should_stop():
                    self.restart(segment)
                self.checkpoint(segment)
        finally:
            self.writer.close()
            self.ledger.close()
            self.ctx.events.event(
                "stream_closed", frames=self.writer.frames_written, bytes=self.writer.bytes_written
            )

    def start(self) -> int:
        """A fresh start: minimize and equilibrate; returns the first segment's number (0)."""
        with self.ctx.events.span("prepare") as info:
            info["energy_kj_mol"] = prepare_start(self.simulation, self.config, self.structure,
                                                  self.seed)
        return 0

    def checkpoint(self, segment: int) -> None:
        """Save the state; `segment` is the one to run when continuing from it."""
        with self.ctx.events.span("checkpoint", segment=segment):
            save_state(self.ctx.run.sim_checkpoint(self.sim_id), self.simulation, segment,
                       self.structure_id)
        self.last_checkpoint_step = self.simulation.currentStep

    def resume(self) -> int:
        """Continue from this simulation's checkpoint, or start fresh when it has none.

        Sequential mode then restarts from the catalog (each stage is a new segment). Returns
        the number of the segment to run."""
        state = load_state(self.ctx.run.sim_checkpoint(self.sim_id))
        if state is None:
            return self.start()
        if state.structure_id != self.structure_id:
            self.load_structure(state.structure_id)
        state = self._after_ledger(state)
        restore_state(self.simulation, state)
        self.last_checkpoint_step = state.step
        self.ctx.events.event("resume", segment=state.segment, step=state.step,
                              structure=state.structure_id)
        logger.info("resumed from the checkpoint: segment %d, step %d", state.segment,
                    state.step)
        if self.ctx.once:
            self.restart(state.segment)
        return state.segment

    def _after_ledger(self, state: SimState) -> SimState:
        """`state` numbered after the last frame in the ledger (frames streamed after the
        checkpoint keep their identities; the continuation gets new ones)."""
        last = last_recorded(self.ctx.run.sim_ledger(self.sim_id))
        if last is None or (last[0] < state.segment and last[1] < state.step):
            return state
        step = max(state.step, last[1])
        return replace(state, segment=max(state.segment, last[0] + 1), step=step,
                       time_ps=step * self.config.timestep_fs * 1e-3)

    def run_segment(self, segment: int) -> SegmentTimes:
        self.reporter.segment_id = segment
        steps_left = self.config.steps_per_report * self.config.reports_per_segment
        times = SegmentTimes()
        before = (self.reporter.seconds, self.writer.put_seconds)
        with self.ctx.events.span("segment", segment=segment) as info:
            started = time.perf_counter()
            while steps_left > 0 and not self.ctx.should_stop():
                chunk = min(steps_left, STEPS_PER_CALL, self.config.steps_per_report)
                self.simulation.step(chunk)
                self.writer.heartbeat()  # readers on other hosts judge liveness by it
                steps_left -= chunk
                self._checkpoint_within(segment)
            if isinstance(self.writer, BatchingWriter):  # sequential mode: the segment's frames
                with self.ctx.events.span("write") as written:
                    written["frames"] = self.writer.flush()
                self._record_sent()
            times.total = time.perf_counter() - started
            times.reporter = self.reporter.seconds - before[0]
            times.put = self.writer.put_seconds - before[1]
            steps = self.config.steps_per_report * self.config.reports_per_segment - steps_left
            info.update(
                steps=steps,
                md_s=times.md,
                reporter_s=times.reporter,
                put_s=times.put,
                ns=steps * self.config.timestep_fs * 1e-6,
            )
        self.ctx.update_status(
            segment=segment,
            frames=self.writer.frames_written,
            ns=self.simulated_ns,
            min_rmsd=self.min_rmsd,
        )
        return times

    def _checkpoint_within(self, segment: int) -> None:
        """`checkpoint_interval_ns`: a checkpoint in the middle of a long segment."""
        due = self.checkpoint_steps is not None and (
            self.simulation.currentStep - self.last_checkpoint_step >= self.checkpoint_steps)
        if due and not isinstance(self.writer, BatchingWriter):  # batches: only at their end
            self.checkpoint(segment + 1)

    @property
    def simulated_ns(self) -> float:
        return self.simulation.currentStep * self.config.timestep_fs * 1e-6

    def restart(self, segment: int) -> OutlierRecord | None:
        """Continue from an outlier of the catalog, or from the current state when it is empty."""
        if self.ctx.config.workflow.mode == "plain":  # the unsteered control: never restart
            return None
        record = pick_restart(
            self.catalog.load_last_good(), self.sim_id, self.config.restart_policy, self.rng
        )
        if record is None:
            logger.info("segment %d: catalog empty, continuing", segment)
            return None
        if record.structure_id != self.structure_id:
            if record.structure_id >= len(self.config.structures()):
                logger.error("catalog record names structure %d of %d; continuing",
                             record.structure_id, len(self.config.structures()))
                return None
            self.load_structure(record.structure_id)  # its topology, not ours
        n_atoms = self.simulation.topology.getNumAtoms()
        if record.positions.shape != (n_atoms, 3):
            logger.error(
                "catalog record has %s positions, system has %d atoms; continuing",
                record.positions.shape,
                n_atoms,
            )
            return None
        self.apply_restart(record)
        self.ctx.events.event(
            "restart",
            segment=segment,
            source_sim=record.sim_id,
            source_step=record.step,
            source_segment=record.segment_id,
            source_structure=record.structure_id,
            rmsd=record.rmsd,
            model_version=record.model_version,
        )
        logger.info(
            "segment %d: restart from sim %d step %d (RMSD %.2f Å)",
            segment,
            record.sim_id,
            record.step,
            record.rmsd,
        )
        return record

    def apply_restart(self, record: OutlierRecord) -> None:
        context = self.simulation.context
        if record.box is not None:  # before the positions: NPT boxes differ between frames
            context.setPeriodicBoxVectors(*(v * unit.nanometer for v in record.box.astype(float)))
        context.setPositions(record.positions.astype(np.float64) * unit.nanometer)
        context.applyConstraints(CONSTRAINT_TOLERANCE)  # stored float32 coordinates drift
        copy = (
            record.velocities is not None
            and self.rng.random() < self.config.velocity_copy_probability
        )
        if copy:
            context.setVelocities(
                record.velocities.astype(np.float64) * unit.nanometer / unit.picosecond
            )
        else:
            context.setVelocitiesToTemperature(
                self.config.temperature_k * unit.kelvin, int(self.rng.integers(1, 2**31 - 1))
            )
        context.applyVelocityConstraints(CONSTRAINT_TOLERANCE)


def main(ctx: TaskContext) -> None:
    StreamingSimulation(ctx).run()


if __name__ == "__main__":
    raise SystemExit(run_task("sim", main))
