"""Trainer task loop: incremental data window → CVAE rounds → best model published atomically."""

from __future__ import annotations

import logging
import math
import resource
import time
from typing import Any

import numpy as np

from ddmd_stream.ml.data import FrameWindow
from ddmd_stream.ml.registry import clean_stale_tmp, prune_versions, publish_model
from ddmd_stream.task import TaskContext

logger = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def split_train_val(first: int, count: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation positions for frames numbered first..first+count-1 in arrival order.

    A frame's side depends on its number only, so it never moves from validation to training
    between rounds and validation losses of successive rounds stay comparable.
    """
    every = max(2, round(1.0 / fraction))
    is_val = (np.arange(first, first + count) % every) == 0
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


class Trainer:
    """Keeps training on the newest frames; publishes whenever validation loss improves."""

    def __init__(self, ctx: TaskContext):
        self.ctx = ctx
        self.settings = ctx.config.training
        streams = ctx.config.streams
        self.window = FrameWindow(streams.adios_xml, streams.aggregator_io, ctx.run.stream_dir,
                                  ["contact_map"], self.settings.max_samples, streams.liveness_timeout_s)
        self.model: Any = None
        self.published_weights: list[np.ndarray] | None = None
        self.best_val = math.inf
        self.round = 0
        clean_stale_tmp(ctx.run.model_dir)

    def run(self) -> None:
        while not self.ctx.should_stop():
            started = time.monotonic()
            with self.ctx.events.span("read") as info:
                info["new"] = self.window.update()
            if len(self.window) < self.settings.min_samples:
                self.ctx.update_status(samples=len(self.window), state="waiting for data")
                self.ctx.sleep(1.0)
                continue
            self.train_round()
            self.ctx.sleep(self.settings.round_interval_s - (time.monotonic() - started))
        self.window.close()

    def _ensure_model(self, map_size: int) -> None:
        if self.model is None:
            from ddmd_stream.ml.cvae import CVAE

            if self.settings.seed is not None:
                import keras

                keras.utils.set_random_seed(self.settings.seed)
            self.model = CVAE.build_for(self.settings.model, map_size, seed=self.settings.seed)
            logger.info("built CVAE for %d×%d contact maps", map_size, map_size)

    def train_round(self) -> int | None:
        """One round; returns the published version, if any."""
        maps = self.window.latest()["contact_map"]
        self._ensure_model(maps.shape[1])
        first = self.window.total_seen - len(maps)
        train_idx, val_idx = split_train_val(first, len(maps), self.settings.validation_split)
        train, val = maps[train_idx], maps[val_idx]
        self.round += 1
        with self.ctx.events.span("train_round", round=self.round, samples=len(maps)) as info:
            baseline = self._published_loss(val)
            history = self.model.fit_maps(train, val, epochs=self.settings.epochs,
                                          batch_size=self.settings.batch_size,
                                          callbacks=[_BestWeights()])
            best = self.model.best_val_loss
            info.update(loss=history["loss"][-1], val_loss=best, baseline=baseline,
                        epochs=self.settings.epochs, rss_mb=peak_rss_mb())
        version = None
        if math.isfinite(best) and best < baseline:
            version = self.publish(best, len(maps))
        elif not math.isfinite(best) and self.published_weights is not None:
            logger.warning("round %d: non-finite validation loss; back to the published weights", self.round)
            self.model.set_weights(self.published_weights)
        self.ctx.update_status(round=self.round, samples=len(maps), seen=self.window.total_seen,
                               val_loss=best, best_val_loss=self.best_val, rss_mb=peak_rss_mb(),
                               state="training")
        logger.info("round %d: %d samples, val loss %.3f (published %.3f)%s", self.round, len(maps),
                    best, baseline, f", published v{version}" if version else "")
        return version

    def _published_loss(self, val: np.ndarray) -> float:
        """Loss of the published model on this round's validation data (inf when none)."""
        if self.published_weights is None or len(val) == 0:
            return math.inf
        self.model.set_weights(self.published_weights)
        return self.model.evaluate_maps(val, batch_size=self.settings.batch_size)["loss"]

    def publish(self, val_loss: float, samples: int) -> int:
        metadata = {"val_loss": val_loss, "samples": samples, "samples_seen": self.window.total_seen,
                    "round": self.round, "task": self.ctx.name}
        with self.ctx.events.span("publish_model") as info:
            version = publish_model(self.ctx.run.model_dir, self.model.save, metadata)
            info["version"] = version
            prune_versions(self.ctx.run.model_dir, self.settings.keep_models)
        self.published_weights = self.model.get_weights()
        self.best_val = val_loss
        self.ctx.update_status(model_version=version)
        return version


class _BestWeights:
    """Keras callback factory keeping the weights of the best validation epoch (restored at end)."""

    def __new__(cls) -> Any:
        import keras

        class BestWeights(keras.callbacks.Callback):
            def on_train_begin(self, logs: dict | None = None) -> None:
                self.best, self.weights = math.inf, None
                self.model.best_val_loss = math.inf

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                loss = float((logs or {}).get("val_loss", math.inf))
                if math.isfinite(loss) and loss < self.best:
                    self.best, self.weights = loss, self.model.get_weights()

            def on_train_end(self, logs: dict | None = None) -> None:
                if self.weights is not None:
                    self.model.set_weights(self.weights)
                self.model.best_val_loss = self.best

        return BestWeights()


def main(ctx: TaskContext) -> None:
    Trainer(ctx).run()
