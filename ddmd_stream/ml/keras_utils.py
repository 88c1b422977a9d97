"""Keras helpers shared by the model implementations (imports Keras/TensorFlow)."""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

from ddmd_stream.ml.base import MODEL_META_FILE

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.weights.h5"


class ArrayBatches(keras.utils.PyDataset):
    """Mini-batches of `prepare(array[rows])`, made on the fly (memory stays at input size)."""

    def __init__(
        self,
        array: np.ndarray,
        prepare: Callable[[np.ndarray], np.ndarray],
        batch_size: int,
        shuffle: bool,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.array = array
        self.prepare = prepare
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = rng or np.random.default_rng()
        self.order = np.arange(len(array))
        if shuffle:
            self.rng.shuffle(self.order)

    def __len__(self) -> int:
        return math.ceil(len(self.array) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray]:
        rows = np.sort(self.order[index * self.batch_size : (index + 1) * self.batch_size])
        return (self.prepare(self.array[rows]),)

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.rng.shuffle(self.order)


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the lowest finite val_loss; restores them at the end."""

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.best, self.weights = math.inf, None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        loss = float((logs or {}).get("val_loss", math.inf))
        if math.isfinite(loss) and loss < self.best:
            self.best, self.weights = loss, self.model.get_weights()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.weights is not None:
            self.model.set_weights(self.weights)


def fit_batches(
    model: keras.Model,
    train: keras.utils.PyDataset,
    val: keras.utils.PyDataset | None,
    epochs: int,
    callbacks: Sequence[keras.callbacks.Callback] | None,
    restore_best: bool,
    verbose: int,
) -> dict[str, list[float]]:
    """`model.fit` on batch sources; history as floats, 'val_loss' always present."""
    all_callbacks = list(callbacks or [])
    if restore_best and val is not None:
        all_callbacks.append(BestWeights())
    result = model.fit(
        train, validation_data=val, epochs=epochs, callbacks=all_callbacks, verbose=verbose
    )
    history = {key: [float(v) for v in values] for key, values in result.history.items()}
    history.setdefault("val_loss", [])
    return history


def save_weights(model: keras.Model, directory: Path) -> None:
    """`model.save_weights` into directory/model.weights.h5."""
    with warnings.catch_warnings():
        # Keras' h5 writer trips numpy 2's __array__(copy=) deprecation; harmless.
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        model.save_weights(str(directory / WEIGHTS_FILE))


def load_weights(model: keras.Model, directory: Path) -> None:
    model.load_weights(str(directory / WEIGHTS_FILE))


def evaluate_batches(model: keras.Model, data: keras.utils.PyDataset) -> dict[str, float]:
    """`model.evaluate` on a batch source; its metrics as floats."""
    result = model.evaluate(data, verbose=0, return_dict=True)
    return {key: float(value) for key, value in result.items()}


def encode_batches(
    encoder: keras.Model,
    array: np.ndarray,
    prepare: Callable[[np.ndarray], np.ndarray],
    latent_dim: int,
    batch_size: int,
) -> np.ndarray:
    """z_mean (the encoder's first output) of `prepare(array[rows])`, batch by batch.

    float32 (N, latent_dim); memory stays bounded by one prepared batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = np.empty((len(array), latent_dim), dtype=np.float32)
    for start in range(0, len(array), batch_size):
        batch = prepare(array[start : start + batch_size])
        z_mean, _ = encoder.predict_on_batch(batch)
        out[start : start + len(batch)] = np.asarray(z_mean)
    return out


def model_metadata(
    fmt: str,
    format_version: int,
    config: Any,
    extra: dict[str, Any],
    **fields: Any,
) -> dict[str, Any]:
    """What a model's `model.json` holds: format, version and config (a pydantic model), the
    model's own `fields`, then the Keras version and backend and the caller's `extra`."""
    return {
        "format": fmt,
        "format_version": format_version,
        "config": config.model_dump(mode="json"),
        **fields,
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
        "extra": dict(extra),
    }


def save_model_files(directory: str | Path, network: keras.Model, metadata: dict[str, Any]) -> None:
    """Write `network`'s weights and `metadata` as `model.json` into `directory` (created)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(network, directory)
    (directory / MODEL_META_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
