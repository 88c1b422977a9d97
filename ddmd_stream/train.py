"""Trainer task (`python -m ddmd_stream.train -c TASK.yaml`): incremental data window → model
rounds → best model published atomically.

The model is whatever `training.model` selects (`ddmd_stream.ml.base`); the window holds that
model's `input_field` only.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from pathlib import Path

import numpy as np

from ddmd_stream.frames import SIM_ID, STEP
from ddmd_stream.ml.base import (
    LatentModel,
    ModelError,
    load_model,
    model_class,
    model_for,
    model_kind,
)
from ddmd_stream.ml.data import FrameWindow
from ddmd_stream.ml.registry import (
    clean_stale_tmp,
    latest_version,
    prune_versions,
    publish_model,
    read_meta,
)
from ddmd_stream.task import TaskContext, run_task

logger = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    """This process's peak RSS (MB): VmHWM where Linux has it, else ru_maxrss.

    Linux carries ru_maxrss across fork + exec, so a task started by a big parent would report
    the parent's peak; VmHWM belongs to the task's own address space.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def split_train_val(sim_ids: np.ndarray, steps: np.ndarray, block_steps: int,
                    fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation positions of frames, held out in contiguous blocks per simulation.

    A frame's side depends only on its simulation and on which block of `block_steps` steps
    it lies in, so it never moves between sides from round to round (validation losses of
    successive rounds stay comparable), and validation frames are not the immediate
    neighbours in time of training frames (which would make "best model" mean little).
    Roughly `fraction` of the blocks of every simulation are held out.
    """
    every = max(2, round(1.0 / fraction))
    blocks = np.asarray(steps, dtype=np.int64) // max(1, block_steps)
    is_val = (blocks + np.asarray(sim_ids, dtype=np.int64)) % every == 0
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


class Trainer:
    """Keeps training on the newest frames; publishes whenever validation loss improves."""

    def __init__(self, ctx: TaskContext):
        self.ctx = ctx
        self.settings = ctx.config.training
        self.input_field = model_kind(self.settings.model).input_field
        streams = ctx.config.streams
        self.window = FrameWindow(streams.adios_xml, streams.aggregator_io, ctx.run.stream_dir,
                                  [self.input_field, SIM_ID, STEP], self.settings.max_samples,
                                  streams.liveness_timeout_s)
        self.model: LatentModel | None = None
        self.published_weights: list[np.ndarray] | None = None
        self.best_val = math.inf
        self.round = 0
        model_class(self.settings.model)  # import Keras now, not when the first data is in
        sim = ctx.config.simulation
        self.block_steps = self.settings.validation_block_frames * sim.steps_per_report
        clean_stale_tmp(ctx.run.model_dir)

    def run(self) -> None:
        while not self.ctx.should_stop():
            started = time.monotonic()
            with self.ctx.events.span("read") as info:
                info["new"] = self.window.update()
            if len(self.window) < self.settings.min_samples:
                self.ctx.update_status(samples=len(self.window), state="waiting for data")
                if self.ctx.once:
                    break
                self.ctx.sleep(1.0)
                continue
            self.train_round()
            if self.ctx.once:  # sequential mode: one round per stage
                break
            self.ctx.sleep(self.settings.round_interval_s - (time.monotonic() - started))
        self.window.close()

    def _ensure_model(self, sample: np.ndarray) -> LatentModel:
        if self.model is None:  # any mode: a stage's new process, or a restart after a crash
            self._continue_published()
        if self.model is None:
            self.model = model_for(self.settings, sample[:1], seed=self.settings.seed)
            logger.info("built %s model for %s of shape %s", self.settings.model,
                        self.input_field, sample.shape[1:])
        return self.model

    def _continue_published(self) -> None:
        """Start from the newest published model, its validation loss the bar to beat: a
        trainer started again (each sequential stage, an engine restart after a crash, a
        resumed run) never publishes a model worse than the one published."""
        self.round = self.ctx.recorded_count("train_round")
        latest = latest_version(self.ctx.run.model_dir)
        if latest is None:
            return
        version, path = latest
        try:
            self.model = load_model(path, seed=self.settings.seed)
            meta = read_meta(path)
        except (ModelError, OSError, ValueError) as error:
            logger.error("cannot continue from model v%d: %s; training a new one", version, error)
            self.model = None
            return
        self.published_weights = self.model.get_weights()
        self.best_val = float(meta.get("val_loss", math.inf))
        self.ctx.update_status(model_version=version, best_val_loss=self.best_val)
        logger.info("continuing from model v%d (val loss %.3f)", version, self.best_val)

    def train_round(self) -> int | None:
        """One round; returns the published version, if any."""
        frames = self.window.latest()
        data = frames[self.input_field]
        model = self._ensure_model(data)
        train_idx, val_idx = split_train_val(frames[SIM_ID], frames[STEP], self.block_steps,
                                             self.settings.validation_split)
        train, val = data[train_idx], data[val_idx]
        self.round += 1
        with self.ctx.events.span("train_round", round=self.round, samples=len(data)) as info:
            baseline = self._published_loss(val)
            history = model.fit(train, val, epochs=self.settings.epochs,
                                batch_size=self.settings.batch_size, restore_best=True)
            best = min((v for v in history["val_loss"] if math.isfinite(v)), default=math.inf)
            info.update(loss=history["loss"][-1], val_loss=best, baseline=baseline,
                        epochs=self.settings.epochs, rss_mb=peak_rss_mb())
        version = None
        if math.isfinite(best) and best < baseline:
            version = self.publish(best, len(data))
        elif not math.isfinite(best) and self.published_weights is not None:
            logger.warning("round %d: non-finite validation loss; back to the published weights",
                           self.round)
            model.set_weights(self.published_weights)
        self.ctx.update_status(round=self.round, samples=len(data), seen=self.window.total_seen,
                               val_loss=best, best_val_loss=self.best_val, rss_mb=peak_rss_mb(),
                               state="training")
        logger.info("round %d: %d samples, val loss %.3f (published %.3f)%s", self.round, len(data),
                    best, baseline, f", published v{version}" if version else "")
        return version

    def _published_loss(self, val: np.ndarray) -> float:
        """Loss of the published model on this round's validation data (inf when none)."""
        if self.model is None or self.published_weights is None or len(val) == 0:
            return math.inf
        self.model.set_weights(self.published_weights)
        return self.model.evaluate(val, batch_size=self.settings.batch_size)["loss"]

    def publish(self, val_loss: float, samples: int) -> int:
        if self.model is None:
            raise RuntimeError("no model to publish yet")
        metadata = {"val_loss": val_loss, "samples": samples,
                    "samples_seen": self.window.total_seen, "round": self.round,
                    "task": self.ctx.name, "model": self.settings.model,
                    "input_field": self.input_field}
        with self.ctx.events.span("publish_model") as info:
            version = publish_model(self.ctx.run.model_dir, self.model.save, metadata)
            info["version"] = version
            prune_versions(self.ctx.run.model_dir, self.settings.keep_models)
        self.published_weights = self.model.get_weights()
        self.best_val = val_loss
        self.ctx.update_status(model_version=version)
        return version


def main(ctx: TaskContext) -> None:
    Trainer(ctx).run()


if __name__ == "__main__":
    raise SystemExit(run_task("trainer", main))
