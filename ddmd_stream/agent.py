"""Agent task (`python -m ddmd_stream.agent -c TASK.yaml`): newest model + recent frames →
latent outliers → ranked → outlier catalog."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ddmd_stream import frames as f
from ddmd_stream.catalog import OutlierCatalog, OutlierRecord
from ddmd_stream.detectors import Detection, Detector, make_detector, rank_outliers, resolve
from ddmd_stream.detectors.embedding import has_spread, input_embedding
from ddmd_stream.ml.base import LatentModel, load_model, model_class, model_kind
from ddmd_stream.ml.data import FrameWindow, LatentCache
from ddmd_stream.ml.registry import latest_version
from ddmd_stream.parallel import (
    SharedEncoder,
    abort_all_ranks_on_failure,
    stop_workers,
    worker_loop,
    world,
)
from ddmd_stream.task import TaskContext, run_task

logger = logging.getLogger(__name__)

FRAME_FIELDS = list(f.IDENTITY_FIELDS)  # copied every cycle


class Agent:
    """Each cycle: read new frames, (re)load the newest model, detect, rank, publish."""

    def __init__(self, ctx: TaskContext, comm: Any = None):
        """`comm`: an MPI communicator whose other ranks share the encoding (parallel.py)."""
        self.ctx = ctx
        self.comm = comm
        self.settings = ctx.config.agent
        sim = ctx.config.simulation
        streams = ctx.config.streams
        self.restart_fields = f.restart_fields(sim.stream_velocities, sim.positions,
                                               periodic=sim.solvent == "explicit")
        kind = model_kind(ctx.config.training.model)
        model_class(kind.name)  # import Keras now, not when the first model is published
        # every cycle copies the frame fields; model input only where a latent is missing;
        # restart coordinates are read from the stores for the chosen few (memory stays flat
        # in the number of atoms)
        fields = list(dict.fromkeys([*FRAME_FIELDS, kind.input_field]))
        self.window = FrameWindow(streams.adios_xml, streams.aggregator_io, ctx.run.stream_dir,
                                  fields, self.settings.max_samples, streams.liveness_timeout_s,
                                  locate=True)
        self.latents = LatentCache(self.window.buffer)
        self.detector = self.make_detector(kind.preferred_detector)
        self.catalog = OutlierCatalog(ctx.run.catalog_file)
        self.rng = np.random.default_rng(self.settings.seed)
        self.model: LatentModel | None = None
        self.model_version = 0
        self.model_path: Path | None = None
        self.cycle_count = 0
        self.detected_with = 0  # model version of the last detection in latent space (0: none)

    def run(self) -> None:
        if self.ctx.once:  # sequential mode: a process per cycle; number cycles across them
            self.cycle_count = self.ctx.recorded_count("cycle")
        while not self.ctx.should_stop():
            started = time.monotonic()
            ran = self.cycle()
            if self.ctx.once:  # sequential mode: one cycle per stage
                break
            wait = self.settings.cycle_interval_s if ran else 1.0
            self.ctx.sleep(wait - (time.monotonic() - started))
        self.window.close()

    def cycle(self) -> bool:
        """One cycle; False when there was nothing to do yet (no data or no model)."""
        with self.ctx.events.span("read") as info:
            info["new"] = self.window.update()
        if len(self.window) < self.settings.min_samples or not self.load_newest_model():
            self.ctx.update_status(samples=len(self.window), state="waiting")
            return False
        self.cycle_count += 1
        with self.ctx.events.span("cycle", cycle=self.cycle_count) as info:
            rows = self.window.rows()
            frames = self.window.gather(rows, FRAME_FIELDS)
            with self.ctx.events.span("encode", frames=len(rows)) as encoded:
                latents, encoded["encoded"] = self.latents.encode(
                    rows, self.encoder(), self.model_version, self.settings.encode_batch_size)
            with self.ctx.events.span("cluster") as cluster:
                detection = self.detect(rows, latents)
                cluster.update(outliers=len(detection.indices), **_floats(detection.params))
            info.update(frames=len(latents), outliers=len(detection.indices),
                        min_rmsd=float(frames[f.RMSD].min()), model_version=self.model_version,
                        **_floats(detection.params))
            published = self.publish(frames, rows, detection)
            info["catalog_version"] = published
        return True

    def encoder(self) -> Any:
        """What encodes the window's frames: the model, or all ranks with it."""
        if self.comm is None:
            return self.model
        return SharedEncoder(self.comm, self.model, self.model_version, self.model_path)

    def detect(self, rows: np.ndarray, latents: np.ndarray) -> Detection:
        """Outliers among the window's `rows`, in latent space; on the model's input instead
        where all latents coincide (`detectors.embedding`)."""
        if not has_spread(latents):
            return self.detect_on_inputs(rows)
        detection = self.detect_latents(latents)
        self.detector.update(len(detection.indices))
        return detection

    def detect_latents(self, latents: np.ndarray) -> Detection:
        """The first detection of a process sets the detector's parameters (DBSCAN's eps) for
        the data, and so does the first under a new model (its latent space has another
        scale); in between they adapt slowly (`Detector.update`)."""
        fresh, self.detected_with = self.detected_with != self.model_version, self.model_version
        return self.detector.detect_adaptive(latents) if fresh else self.detector.detect(latents)

    def detect_on_inputs(self, rows: np.ndarray) -> Detection:
        """Outliers among the principal components of the model's input, with a detector of
        their own (the latent detector's parameters stay as they were)."""
        assert self.model is not None
        field = self.model.input_field
        logger.warning("cycle %d: model v%d encodes all %d frames to one point; detecting "
                       "outliers on their %s instead", self.cycle_count, self.model_version,
                       len(rows), field)
        embedded = input_embedding(self.window.gather(rows, [field])[field])
        detection = self.make_detector(self.model.preferred_detector).detect_adaptive(embedded)
        return Detection(detection.indices, detection.scores,
                         {**detection.params, "on_inputs": 1.0})

    def load_newest_model(self) -> bool:
        """Load the newest published model when it changed; False while there is none usable."""
        latest = latest_version(self.ctx.run.model_dir)
        if latest is None:
            return self.model is not None
        version, path = latest
        if version == self.model_version:
            return True
        try:
            with self.ctx.events.span("load_model", version=version):
                model = load_model(path)
            if model.input_field not in self.window.variables:
                raise ValueError(f"it encodes {model.input_field!r}, which this agent does not "
                                 f"read (training.model is {self.ctx.config.training.model})")
            self.use_model(model, version)
            self.model_path = path
        except Exception as error:  # a bad model must not end the agent
            logger.error("cannot load model v%d from %s: %s; will retry", version, path, error)
        return self.model is not None

    def use_model(self, model: LatentModel, version: int) -> None:
        """Switch to a loaded model (and, with `detector: auto`, to its preferred detector)."""
        if resolve(self.settings.detector, model.preferred_detector) != self.detector.name:
            self.detector = self.make_detector(model.preferred_detector)
        self.model, self.model_version = model, version
        logger.info("loaded model v%d (%s, detector %s)", version, model.kind.name,
                    self.detector.name)

    def make_detector(self, preferred: str) -> Detector:
        """`agent.detector`, where `auto` means the model's `preferred` detector."""
        return make_detector(self.settings, preferred, n_jobs=self.ctx.config.resources.agent.cpus)

    def publish(self, frames: dict[str, np.ndarray], rows: np.ndarray,
                detection: Detection) -> int | None:
        """Rank the outliers and publish the chosen ones (`rows`: their window rows)."""
        if len(detection.indices) == 0:
            logger.info("cycle %d: no outliers (%s)", self.cycle_count, detection.params)
            return None
        if not self.restart_fields:
            logger.warning("frames carry no all-atom positions; nothing to restart from")
            return None
        chosen = rank_outliers(detection, frames[f.RMSD], self.ctx.config.ranking,
                               self.settings.n_outliers, self.rng)
        scores = dict(zip(detection.indices.tolist(), detection.scores.tolist(), strict=True))
        with self.ctx.events.span("read_restarts", frames=len(chosen)):
            restart = self.window.read_stored(rows[chosen], self.restart_fields)
        records = [self.record(frames, restart, int(i), j, scores.get(int(i), 0.0))
                   for j, i in enumerate(chosen)]
        with self.ctx.events.span("publish_catalog", records=len(records)) as info:
            version = self.catalog.publish(records)
            info["version"] = version
        self.ctx.update_status(catalog_version=version, outliers=len(records),
                               min_rmsd=float(frames[f.RMSD].min()),
                               model_version=self.model_version, cycle=self.cycle_count,
                               state="running")
        return version

    def record(self, frames: dict[str, np.ndarray], restart: dict[str, np.ndarray], index: int,
               chosen: int, score: float) -> OutlierRecord:
        """The catalog record of frame `index`, whose restart coordinates are `restart[chosen]`."""
        positions, velocities, box = f.restart_state({k: v[chosen] for k, v in restart.items()})
        return OutlierRecord(
            sim_id=int(frames[f.SIM_ID][index]), step=int(frames[f.STEP][index]),
            positions=np.array(positions, dtype=np.float32), rmsd=float(frames[f.RMSD][index]),
            score=float(score), velocities=None if velocities is None else np.array(velocities),
            box=None if box is None else np.array(box, dtype=np.float32),
            segment_id=int(frames[f.SEGMENT_ID][index]),
            structure_id=int(frames[f.STRUCTURE_ID][index]), model_version=self.model_version,
        )


def _floats(params: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in params.items() if isinstance(v, int | float | np.number)}


def main(ctx: TaskContext) -> None:
    ranks = ctx.config.resources.agent.ranks
    if ranks == 1:
        Agent(ctx).run()
        return
    comm = world()  # imports mpi4py
    if comm.Get_size() != ranks:
        logger.warning("resources.agent.ranks is %d but MPI started %d ranks; using %d",
                       ranks, comm.Get_size(), comm.Get_size())
    if comm.Get_rank() > 0:
        worker_loop(ctx, comm)
        return
    try:
        Agent(ctx, comm if comm.Get_size() > 1 else None).run()
    finally:  # the others end with rank 0, whatever ended it
        stop_workers(comm)


if __name__ == "__main__":
    raise SystemExit(abort_all_ranks_on_failure(run_task("agent", main)))
