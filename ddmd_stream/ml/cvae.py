"""Convolutional variational autoencoder (CVAE) on Cα contact maps (Keras 3).

Architecture as in DeepDriveMD: Conv2D stack (ReLU, 'same' padding) → flatten → Dense + Dropout
→ z_mean / z_logvar; the decoder mirrors it (Dense → reshape → Conv2DTranspose stack → one
sigmoid channel). Loss = binary cross-entropy summed over the (unpadded) pixels, averaged over
the batch, + kl_weight · KL. Maps of any size n are zero-padded (bottom/right) to a multiple of
the product of the strides; `input_size` and `padded_size` are saved with the weights so that
encoding uses exactly the preprocessing training used.

This module is the model only: "train on these arrays for k epochs" (`CVAE.fit_maps`),
`encode`, `save`/`load`. Reading data and publishing models live elsewhere. `CVAEModel` wraps
`CVAE` in the `ddmd_stream.ml.base.LatentModel` interface the trainer and the agent use.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
from keras import layers, ops

from ddmd_stream.config import CVAEConfig
from ddmd_stream.ml.base import MODEL_KINDS, MODEL_META_FILE, LatentModel, read_model_meta
from ddmd_stream.ml.keras_utils import (
    WEIGHTS_FILE,
    ArrayBatches,
    encode_batches,
    evaluate_batches,
    fit_batches,
    load_weights,
    model_metadata,
    save_model_files,
)

logger = logging.getLogger(__name__)

__all__ = ["CVAE", "MODEL_META_FILE", "WEIGHTS_FILE", "CVAEModel"]

FORMAT = MODEL_KINDS["cvae"].format
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- preprocessing


def stride_product(strides: Sequence[int]) -> int:
    return math.prod(int(s) for s in strides)


def padded_size_for(map_size: int, strides: Sequence[int]) -> int:
    """Smallest multiple of the stride product that is >= map_size."""
    if map_size < 1:
        raise ValueError(f"contact-map size must be >= 1, got {map_size}")
    step = stride_product(strides)
    return step * math.ceil(map_size / step)


def resize_maps(maps: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad (bottom/right) or crop (N, n, n) maps to (N, size, size); dtype kept."""
    n = maps.shape[-1]
    if n == size:
        return maps
    if n > size:
        return maps[:, :size, :size]
    out = np.zeros((*maps.shape[:-2], size, size), dtype=maps.dtype)
    out[:, :n, :n] = maps
    return out


def prepare_maps(maps: np.ndarray, padded_size: int) -> np.ndarray:
    """(N, n, n) binary maps (uint8/bool/float) → float32 (N, p, p, 1) for the network."""
    maps = np.asarray(maps)
    return resize_maps(maps, padded_size).astype(np.float32, copy=False)[..., np.newaxis]


def _check_maps(maps: np.ndarray, input_size: int, *, check_values: bool) -> np.ndarray:
    maps = np.asarray(maps) if not hasattr(maps, "shape") else maps
    if maps.ndim != 3 or maps.shape[1] != maps.shape[2]:
        raise ValueError(f"contact maps must have shape (N, n, n), got {tuple(maps.shape)}")
    if maps.shape[1] != input_size:
        raise ValueError(
            f"contact maps are {maps.shape[1]}x{maps.shape[2]} but the model was built for "
            f"{input_size}x{input_size}"
        )
    if check_values and len(maps):
        low, high = np.min(maps), np.max(maps)
        if low < 0 or high > 1:
            raise ValueError(f"contact maps must hold values in [0, 1], got [{low}, {high}]")
    return maps


def _map_batches(
    maps: np.ndarray,
    padded_size: int,
    batch_size: int,
    shuffle: bool,
    rng: np.random.Generator | None = None,
) -> ArrayBatches:
    """Mini-batches of prepared maps, made on the fly (memory stays at uint8 size)."""
    return ArrayBatches(maps, partial(prepare_maps, padded_size=padded_size), batch_size,
                        shuffle, rng)


# --------------------------------------------------------------------------- networks


def build_encoder(config: CVAEConfig, padded_size: int) -> keras.Model:
    """(p, p, 1) → [z_mean, z_logvar] (log-variance not yet clamped)."""
    inputs = keras.Input((padded_size, padded_size, 1), name="contact_map")
    h = inputs
    for i, (filters, kernel, stride) in enumerate(
        zip(config.conv_filters, config.conv_kernels, config.conv_strides, strict=True)
    ):
        h = layers.Conv2D(
            filters, kernel, strides=stride, padding="same", activation="relu", name=f"conv{i}"
        )(h)
    h = layers.Flatten(name="flatten")(h)
    h = layers.Dense(config.dense_units, activation="relu", name="dense")(h)
    h = layers.Dropout(config.dropout, name="dropout")(h)
    z_mean = layers.Dense(config.latent_dim, name="z_mean")(h)
    z_logvar = layers.Dense(config.latent_dim, name="z_logvar")(h)
    return keras.Model(inputs, [z_mean, z_logvar], name="encoder")


def build_decoder(config: CVAEConfig, padded_size: int) -> keras.Model:
    """z → logits (p, p, 1); the mirror image of the encoder (sigmoid applied by the caller)."""
    side = padded_size // stride_product(config.conv_strides)
    channels = config.conv_filters[-1]
    inputs = keras.Input((config.latent_dim,), name="z")
    h = layers.Dense(config.dense_units, activation="relu", name="dense")(inputs)
    h = layers.Dense(side * side * channels, activation="relu", name="expand")(h)
    h = layers.Reshape((side, side, channels), name="reshape")(h)
    # Encoder layer i maps filters[i-1] → filters[i] with strides[i]; undo it in reverse.
    for i in range(len(config.conv_filters) - 1, 0, -1):
        h = layers.Conv2DTranspose(
            config.conv_filters[i - 1],
            config.conv_kernels[i],
            strides=config.conv_strides[i],
            padding="same",
            activation="relu",
            name=f"deconv{i}",
        )(h)
    logits = layers.Conv2DTranspose(
        1, config.conv_kernels[0], strides=config.conv_strides[0], padding="same", name="logits"
    )(h)
    return keras.Model(inputs, logits, name="decoder")


# --------------------------------------------------------------------------- model


class CVAE(keras.Model):
    """CVAE with the loss in `compute_loss`, so Keras' own fit/evaluate loops drive it.

    `call(x)` returns (logits, z_mean, z_logvar) with z_logvar clamped to ±logvar_clip.
    """

    def __init__(
        self,
        config: CVAEConfig,
        input_size: int,
        seed: int | None = None,
        extra_metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name="cvae")
        self.cvae_config = config
        self.input_size = int(input_size)
        self.padded_size = padded_size_for(self.input_size, config.conv_strides)
        self.extra_metadata: dict[str, Any] = dict(extra_metadata or {})
        self.encoder = build_encoder(config, self.padded_size)
        self.decoder = build_decoder(config, self.padded_size)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")
        # Only the real (unpadded) pixels count in the reconstruction loss.
        mask = np.zeros((self.padded_size, self.padded_size, 1), dtype=np.float32)
        mask[: self.input_size, : self.input_size] = 1.0
        self._pixel_mask = mask
        self._rng = np.random.default_rng(seed)
        self.built = True

    # ----------------------------------------------------------------- construction

    @classmethod
    def build_for(
        cls,
        config: CVAEConfig,
        map_size: int,
        seed: int | None = None,
        extra_metadata: dict[str, Any] | None = None,
    ) -> CVAE:
        """A compiled, untrained CVAE for (map_size × map_size) contact maps."""
        model = cls(config, map_size, seed=seed, extra_metadata=extra_metadata)
        model.compile(
            optimizer=keras.optimizers.RMSprop(
                learning_rate=config.learning_rate,
                rho=config.rho,
                epsilon=config.epsilon,
                clipnorm=config.clipnorm,
            )
        )
        logger.debug(
            "built CVAE for %dx%d maps (padded to %d), %d parameters",
            model.input_size,
            model.input_size,
            model.padded_size,
            model.count_params(),
        )
        return model

    # ----------------------------------------------------------------- forward / loss

    def call(self, inputs: Any, training: bool = False) -> tuple[Any, Any, Any]:
        z_mean, z_logvar = self.encoder(inputs, training=training)
        clip = self.cvae_config.logvar_clip
        z_logvar = ops.clip(z_logvar, -clip, clip)
        z = z_mean  # evaluation is deterministic: the latent mean, not a sample
        if training:
            noise = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
            z = z_mean + ops.exp(0.5 * z_logvar) * noise
        logits = self.decoder(z, training=training)
        return logits, z_mean, z_logvar

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        logits, z_mean, z_logvar = y_pred
        # Stable BCE from logits; summed over pixels, mean over the batch.
        bce = ops.multiply(ops.binary_crossentropy(x, logits, from_logits=True), self._pixel_mask)
        reconstruction = ops.sum(bce, axis=(1, 2, 3))
        kl = -0.5 * ops.sum(1.0 + z_logvar - ops.square(z_mean) - ops.exp(z_logvar), axis=-1)
        reconstruction = ops.mean(reconstruction)
        kl = ops.mean(kl)
        self.reconstruction_tracker.update_state(reconstruction)
        self.kl_tracker.update_state(kl)
        loss = reconstruction + self.cvae_config.kl_weight * kl
        if self.losses:
            loss = loss + ops.sum(self.losses)
        return loss

    # ----------------------------------------------------------------- numpy API

    def prepare(self, maps: np.ndarray) -> np.ndarray:
        """(N, n, n) uint8 maps → float32 (N, p, p, 1), as the network sees them."""
        maps = _check_maps(maps, self.input_size, check_values=False)
        return prepare_maps(maps, self.padded_size)

    def fit_maps(
        self,
        train_maps: np.ndarray,
        val_maps: np.ndarray | None = None,
        epochs: int = 1,
        batch_size: int = 32,
        *,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        restore_best: bool = False,
        verbose: int = 0,
    ) -> dict[str, list[float]]:
        """Train for `epochs` on (N, n, n) maps; history per epoch.

        Keys: loss, reconstruction_loss, kl_loss and their val_ forms; 'val_loss' is an empty
        list when there is no validation data. Optimizer state carries over between calls.
        `restore_best`: end with the weights of the epoch with the lowest finite val_loss.
        """
        train_maps = _check_maps(train_maps, self.input_size, check_values=True)
        if len(train_maps) == 0:
            raise ValueError("no training maps")
        train = _map_batches(train_maps, self.padded_size, batch_size, shuffle=True, rng=self._rng)
        val = None
        if val_maps is not None and len(val_maps) > 0:
            val_maps = _check_maps(val_maps, self.input_size, check_values=True)
            val = _map_batches(val_maps, self.padded_size, batch_size, shuffle=False)
        return fit_batches(self, train, val, epochs, callbacks, restore_best, verbose)

    def evaluate_maps(self, maps: np.ndarray, batch_size: int = 256) -> dict[str, float]:
        """Mean loss, reconstruction_loss and kl_loss on maps (deterministic: decodes z_mean)."""
        maps = _check_maps(maps, self.input_size, check_values=True)
        if len(maps) == 0:
            raise ValueError("no maps to evaluate")
        data = _map_batches(maps, self.padded_size, batch_size, shuffle=False)
        return evaluate_batches(self, data)

    def encode(self, maps: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """z_mean of (N, n, n) maps as float32 (N, latent_dim); batched, bounded memory."""
        maps = _check_maps(maps, self.input_size, check_values=False)
        prepare = partial(prepare_maps, padded_size=self.padded_size)
        return encode_batches(self.encoder, maps, prepare, self.cvae_config.latent_dim, batch_size)

    # ----------------------------------------------------------------- persistence

    def metadata(self) -> dict[str, Any]:
        """What `model.json` holds."""
        return model_metadata(
            FORMAT,
            FORMAT_VERSION,
            self.cvae_config,
            self.extra_metadata,
            input_size=self.input_size,
            padded_size=self.padded_size,
            latent_dim=self.cvae_config.latent_dim,
        )

    def save(self, directory: str | Path) -> None:  # type: ignore[override]
        """Write `model.weights.h5` and `model.json` into `directory` (created if needed)."""
        save_model_files(directory, self, self.metadata())

    @classmethod
    def load(cls, directory: str | Path, seed: int | None = None) -> CVAE:
        """Rebuild a CVAE saved by `save` (compiled, weights and optimizer state restored)."""
        directory = Path(directory)
        meta = read_model_meta(directory, FORMAT, FORMAT_VERSION)
        config = CVAEConfig.model_validate(meta["config"])
        model = cls.build_for(
            config, int(meta["input_size"]), seed=seed, extra_metadata=meta.get("extra")
        )
        if model.padded_size != int(meta["padded_size"]):
            raise ValueError(
                f"{directory / MODEL_META_FILE}: padded_size {meta['padded_size']} does not match "
                f"{model.padded_size} computed from the config"
            )
        # Build the optimizer first so its saved state (RMSprop slots) loads too.
        model.optimizer.build(model.trainable_variables)
        load_weights(model, directory)
        return model


class CVAEModel(LatentModel):
    """The CVAE behind the `LatentModel` interface: learns from `contact_map` (uint8 r×r)."""

    kind = MODEL_KINDS["cvae"]

    def __init__(self, network: CVAE) -> None:
        self.network = network

    @property
    def latent_dim(self) -> int:
        return self.network.cvae_config.latent_dim

    @property
    def config(self) -> CVAEConfig:
        return self.network.cvae_config

    @classmethod
    def build(
        cls,
        config: CVAEConfig,
        sample: np.ndarray,
        seed: int | None = None,
        extra_metadata: dict[str, Any] | None = None,
    ) -> CVAEModel:
        sample = np.asarray(sample) if not hasattr(sample, "shape") else sample
        if sample.ndim != 3:
            raise ValueError(f"contact maps must have shape (N, n, n), got {tuple(sample.shape)}")
        network = CVAE.build_for(config, sample.shape[-1], seed=seed, extra_metadata=extra_metadata)
        logger.info("built CVAE for %d×%d contact maps", network.input_size, network.input_size)
        return cls(network)

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
        return self.network.fit_maps(train, val, epochs, batch_size, callbacks=callbacks,
                                     restore_best=restore_best, verbose=verbose)

    def evaluate(self, x: np.ndarray, batch_size: int = 256) -> dict[str, float]:
        return self.network.evaluate_maps(x, batch_size)

    def encode(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        return self.network.encode(x, batch_size)

    def save(self, directory: str | Path) -> None:
        self.network.save(directory)

    @classmethod
    def load(cls, directory: str | Path, seed: int | None = None) -> CVAEModel:
        return cls(CVAE.load(directory, seed=seed))

    def metadata(self) -> dict[str, Any]:
        return self.network.metadata()
