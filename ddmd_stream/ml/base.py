"""The model interface shared by the CVAE and the 3dAAE, and the table of known models.

The trainer and the agent know models only through this module:

- `model_kind(name)` → `ModelKind`: which streamed variable the model learns from
  (`input_field`), which outlier detector suits its latent space (`preferred_detector`), and
  where its implementation lives. No TensorFlow is imported for this.
- `model_for(training, sample)` builds the model that `training.model` selects, for inputs
  shaped like `sample`; `load_model(directory)` rebuilds any saved model, dispatching on the
  `format` recorded in its `model.json`.
- `LatentModel` is what both return: `fit`, `evaluate`, `encode`, `save`/`load`,
  `get_weights`/`set_weights`.

Adding a model: implement `LatentModel` in a module of this package and add one `ModelKind` to
`MODEL_KINDS` (and its config section to `TrainingConfig`).
"""

from __future__ import annotations

import importlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ddmd_stream.config import TrainingConfig
from ddmd_stream.errors import InputError
from ddmd_stream.frames import CONTACT_MAP, POSITIONS

logger = logging.getLogger(__name__)

MODEL_META_FILE = "model.json"  # written by every model's `save`; its "format" names the model


@dataclass(frozen=True)
class ModelKind:
    """What the rest of the system needs to know about a model, without importing it."""

    name: str  # the value of `training.model`
    format: str  # the "format" its model.json records
    module: str
    class_name: str
    input_field: str  # the streamed variable it learns from and encodes
    preferred_detector: str  # outlier detector for `agent.detector: auto` (detectors.resolve)


MODEL_KINDS: dict[str, ModelKind] = {
    "cvae": ModelKind("cvae", "ddmd_stream.cvae", "ddmd_stream.ml.cvae", "CVAEModel",
                      input_field=CONTACT_MAP, preferred_detector="dbscan"),
    "aae": ModelKind("aae", "ddmd_stream.aae", "ddmd_stream.ml.aae", "AAEModel",
                     input_field=POSITIONS, preferred_detector="lof"),
}


def model_kind(name: str) -> ModelKind:
    """The `ModelKind` of `training.model` (e.g. "cvae")."""
    try:
        return MODEL_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODEL_KINDS)}") from None


def model_class(name: str) -> type[LatentModel]:
    """The implementation of a model kind (imports Keras/TensorFlow)."""
    kind = model_kind(name)
    cls: type[LatentModel] = getattr(importlib.import_module(kind.module), kind.class_name)
    return cls


def model_for(
    training: TrainingConfig,
    sample: np.ndarray,
    seed: int | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> LatentModel:
    """A new, untrained model as `training` selects it, for inputs shaped like `sample`."""
    cls = model_class(training.model)
    if seed is not None:
        import keras

        keras.utils.set_random_seed(seed)
    return cls.build(training.model_settings, sample, seed=seed, extra_metadata=extra_metadata)


def read_model_meta(
    directory: str | Path,
    expected_format: str | None = None,
    max_version: int | None = None,
) -> dict[str, Any]:
    """The `model.json` of a saved model.

    With `expected_format`, raises ValueError unless it records that format; with `max_version`,
    also when its "format_version" is newer than this code reads.
    """
    path = Path(directory) / MODEL_META_FILE
    meta: dict[str, Any] = json.loads(path.read_text())
    if expected_format is not None and meta.get("format") != expected_format:
        raise ValueError(f"{path}: not a {expected_format} model")
    if max_version is not None and meta.get("format_version", 0) > max_version:
        raise ValueError(
            f"{path}: format_version {meta['format_version']} is newer "
            f"than this code ({max_version})"
        )
    return meta


def kind_of_saved(directory: str | Path) -> ModelKind:
    """The `ModelKind` of a saved model, from the format in its `model.json`."""
    path = Path(directory) / MODEL_META_FILE
    fmt = read_model_meta(directory).get("format")
    for kind in MODEL_KINDS.values():
        if kind.format == fmt:
            return kind
    raise ValueError(f"{path}: unknown model format {fmt!r}")


class ModelError(InputError):
    """A published model is missing, corrupt or of an unknown format."""


def load_model(directory: str | Path, seed: int | None = None) -> LatentModel:
    """Rebuild whatever model `save` wrote into `directory` (compiled, weights restored).

    Raises ModelError (one line naming the folder) when the files are missing or corrupt.
    """
    try:
        kind = kind_of_saved(directory)
        return model_class(kind.name).load(directory, seed=seed)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelError(
            f"{directory}: cannot load the model ({type(error).__name__}: {error}); "
            "the trainer publishes a new version, or delete this folder"
        ) from None


class LatentModel(ABC):
    """A model that learns a latent space from one streamed variable, and encodes into it.

    Arrays are numpy, shaped as streamed: (frames, ...) of `input_field`. Implementations
    prepare them (padding, centring, scaling) themselves, and `save` records whatever that
    preparation needs so that a loaded model encodes exactly as the trained one did.
    """

    kind: ClassVar[ModelKind]
    network: Any  # the Keras model behind it (its weights are the model's whole state)

    @property
    def input_field(self) -> str:
        return self.kind.input_field

    @property
    def preferred_detector(self) -> str:
        return self.kind.preferred_detector

    @property
    @abstractmethod
    def latent_dim(self) -> int:
        """Length of a latent vector."""

    @classmethod
    @abstractmethod
    def build(
        cls,
        config: Any,
        sample: np.ndarray,
        seed: int | None = None,
        extra_metadata: dict[str, Any] | None = None,
    ) -> LatentModel:
        """A compiled, untrained model for inputs shaped like `sample` (frames, ...)."""

    @abstractmethod
    def fit(
        self,
        train: np.ndarray,
        val: np.ndarray | None = None,
        epochs: int = 1,
        batch_size: int = 32,
        *,
        callbacks: Sequence[Any] | None = None,
        restore_best: bool = False,
        verbose: int = 0,
    ) -> dict[str, list[float]]:
        """Train for `epochs`; per-epoch history with at least 'loss' and 'val_loss'.

        'val_loss' is empty without validation data. `restore_best` ends with the weights of
        the epoch with the lowest finite 'val_loss'. Optimizer state carries over between calls.
        Lower 'val_loss' means a better model; values of one model are comparable across calls.
        """

    @abstractmethod
    def evaluate(self, x: np.ndarray, batch_size: int = 256) -> dict[str, float]:
        """Mean 'loss' (the quantity 'val_loss' reports) and the model's other metrics on x."""

    @abstractmethod
    def encode(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Latent vectors (frames, latent_dim) as float32; deterministic, batch-size independent."""

    @abstractmethod
    def save(self, directory: str | Path) -> None:
        """Write the model (weights + `model.json`) into `directory` (created if needed)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: str | Path, seed: int | None = None) -> LatentModel:
        """Rebuild a model that `save` wrote."""

    def get_weights(self) -> list[np.ndarray]:
        """All state that `set_weights` restores (including input statistics, if any)."""
        return list(self.network.get_weights())

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Restore what `get_weights` returned."""
        self.network.set_weights(weights)

    @abstractmethod
    def metadata(self) -> dict[str, Any]:
        """What `model.json` holds (at least "format")."""
