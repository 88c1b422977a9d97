"""3D adversarial autoencoder (3dAAE) on Cα point clouds (Keras 3, TensorFlow backend).

Architecture as in DeepDriveMD's 3dAAE (Zamorski et al. 2018, adapted to proteins):

- encoder (PointNet-style): Conv1D layers over the points (ReLU between them), a global max
  pool over the points, a dense layer, then z_mean / z_logvar; while training z is sampled
  from N(z_mean, exp(z_logvar)) (`variational`), encoding uses z_mean;
- decoder: dense layers to N×3 coordinates;
- discriminator on the latent space: dense layers to one score (a WGAN critic).

Every training step, with z the codes of a batch and p samples of the prior N(noise_mu,
noise_std²): the critic minimises mean D(z) - mean D(p) + lambda_gp · GP (WGAN-GP gradient
penalty on random interpolates of p and z), and encoder + decoder minimise
-mean D(z) + lambda_rec · Chamfer(x, decode(z)), each with its own Adam. Both updates come from
one forward pass (simultaneous updates; DeepDriveMD steps the critic first).

Inputs are the streamed `positions` (frames, points, 3) in Å, optionally a subset
(`point_indices`). The first layer of the encoder (`PointNormalization`) removes each cloud's
centroid (equal weights: the Cα centre of mass) and divides by a scale s: the RMS radius of all
clouds the model was trained on so far (running mean, updated at the start of every `fit`).
s is a (non-trainable) weight, so it is saved with the model, restored by `set_weights`, and
also written to model.json; a loaded model prepares inputs exactly as the trained one did.

Reported 'loss' / 'val_loss' is the Chamfer distance in Å² (per cloud: sum over its points of
the squared distance to the nearest point of the other cloud, both ways; mean over clouds) of
the deterministic reconstruction decode(z_mean) for validation, of decode(z) for training. In Å²
it stays comparable across rounds although s drifts; the training objective uses scaled units.

Gradients: the train step uses `tf.GradientTape` (two optimizers and a gradient penalty need
a hand-written step, and Keras 3 has no backend-neutral gradient API); everything else is
`keras.ops`. Other backends would need their own `train_step`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
from keras import layers, ops

from ddmd_stream.config import AAEConfig
from ddmd_stream.ml.base import MODEL_KINDS, MODEL_META_FILE, LatentModel, read_model_meta
from ddmd_stream.ml.keras_utils import (
    ArrayBatches,
    encode_batches,
    evaluate_batches,
    fit_batches,
    load_weights,
    model_metadata,
    save_model_files,
)

logger = logging.getLogger(__name__)

FORMAT = MODEL_KINDS["aae"].format
FORMAT_VERSION = 1
STATS_CHUNK = 4096  # frames per chunk when computing input statistics
GP_EPSILON = 1e-12


# --------------------------------------------------------------------------- geometry


def chamfer_distance(x: Any, y: Any) -> Any:
    """Per-cloud Chamfer distance of (B, N, 3) and (B, M, 3): Σ_i min_j d²_ij + Σ_j min_i d²_ij."""
    xx = ops.sum(ops.square(x), axis=-1)
    yy = ops.sum(ops.square(y), axis=-1)
    xy = ops.matmul(x, ops.transpose(y, (0, 2, 1)))
    squared = ops.maximum(xx[:, :, None] + yy[:, None, :] - 2.0 * xy, 0.0)
    return ops.sum(ops.min(squared, axis=2), axis=1) + ops.sum(ops.min(squared, axis=1), axis=1)


def centred(points: np.ndarray) -> np.ndarray:
    """(F, N, 3) clouds with each cloud's centroid removed (float32)."""
    points = np.asarray(points, dtype=np.float32)
    return points - points.mean(axis=1, keepdims=True)


def mean_square_radius(points: np.ndarray) -> tuple[int, float]:
    """(frames, mean over frames and points of |r - centroid|²), computed in chunks."""
    total = 0.0
    for start in range(0, len(points), STATS_CHUNK):
        chunk = centred(points[start : start + STATS_CHUNK])
        total += float(np.square(chunk, dtype=np.float64).sum(axis=(1, 2)).mean()) * len(chunk)
    return len(points), total / len(points) / points.shape[1] if len(points) else 0.0


# --------------------------------------------------------------------------- layers


@keras.saving.register_keras_serializable(package="ddmd_stream")
class PointNormalization(layers.Layer):
    """Centres each cloud on its centroid and divides by the running RMS radius of the data.

    The statistics (`frames_seen`, `mean_square`) are non-trainable weights updated by `update`
    (numpy, outside the graph); until the first update the scale is 1.
    """

    def __init__(self, min_scale: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_scale = float(min_scale)
        self.frames_seen = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="frames_seen"
        )
        self.mean_square = self.add_weight(
            shape=(), initializer="ones", trainable=False, name="mean_square"
        )

    def scale(self) -> Any:
        return ops.sqrt(ops.maximum(self.mean_square, self.min_scale**2))

    def call(self, points: Any) -> Any:
        return (points - ops.mean(points, axis=1, keepdims=True)) / self.scale()

    def update(self, points: np.ndarray) -> None:
        """Fold the clouds `points` (F, N, 3) into the running statistics."""
        count, mean_square = mean_square_radius(points)
        if count == 0:
            return
        seen = float(self.frames_seen.numpy())
        old = float(self.mean_square.numpy()) if seen > 0 else 0.0
        total = seen + count
        self.mean_square.assign((old * seen + mean_square * count) / total)
        self.frames_seen.assign(total)

    def statistics(self) -> dict[str, float]:
        mean_square = float(self.mean_square.numpy())
        return {
            "frames_seen": float(self.frames_seen.numpy()),
            "mean_square_radius": mean_square,
            "scale": max(mean_square, self.min_scale**2) ** 0.5,
        }

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "min_scale": self.min_scale}


def _activation(slope: float) -> layers.Layer:
    return layers.LeakyReLU(negative_slope=slope) if slope > 0 else layers.ReLU()


def min_points(config: AAEConfig) -> int:
    """Fewest points the encoder accepts (valid padding shrinks the point axis)."""
    if config.encoder_padding == "same":
        return 1
    return 1 + sum(k - 1 for k in config.encoder_kernels)


def build_encoder(
    config: AAEConfig, num_points: int, normalization: PointNormalization
) -> keras.Model:
    """Raw clouds (N, 3) in Å → [z_mean, z_logvar] (normalisation is the first layer)."""
    inputs = keras.Input((num_points, 3), name="points")
    h = normalization(inputs)
    last = len(config.encoder_filters) - 1
    for i, (filters, kernel) in enumerate(
        zip(config.encoder_filters, config.encoder_kernels, strict=True)
    ):
        h = layers.Conv1D(filters, kernel, padding=config.encoder_padding, name=f"conv{i}")(h)
        if i < last:
            h = _activation(config.encoder_relu_slope)(h)
    h = layers.GlobalMaxPooling1D(name="max_pool")(h)
    h = layers.Dense(config.encoder_filters[-2], name="dense")(h)
    h = _activation(config.encoder_relu_slope)(h)
    z_mean = layers.Dense(config.latent_dim, name="z_mean")(h)
    z_logvar = layers.Dense(config.latent_dim, name="z_logvar")(h)
    return keras.Model(inputs, [z_mean, z_logvar], name="encoder")


def build_decoder(config: AAEConfig, num_points: int) -> keras.Model:
    """z → (N, 3) clouds in normalised units."""
    inputs = keras.Input((config.latent_dim,), name="z")
    h = inputs
    for i, width in enumerate(config.decoder_widths):
        h = layers.Dense(width, name=f"dense{i}")(h)
        h = _activation(config.decoder_relu_slope)(h)
    h = layers.Dense(num_points * 3, name="coordinates")(h)
    outputs = layers.Reshape((num_points, 3), name="points")(h)
    return keras.Model(inputs, outputs, name="decoder")


def build_discriminator(config: AAEConfig) -> keras.Model:
    """z → critic score (1,)."""
    inputs = keras.Input((config.latent_dim,), name="z")
    h = inputs
    for i, width in enumerate(config.discriminator_widths):
        h = layers.Dense(width, name=f"dense{i}")(h)
        h = _activation(config.discriminator_relu_slope)(h)
    outputs = layers.Dense(1, name="score")(h)
    return keras.Model(inputs, outputs, name="discriminator")


# --------------------------------------------------------------------------- network


class AAE3d(keras.Model):
    """Encoder, decoder and latent critic with the WGAN-GP train step (see the module doc)."""

    def __init__(self, config: AAEConfig, num_points: int, seed: int | None = None) -> None:
        super().__init__(name="aae3d")
        if num_points < min_points(config):
            raise ValueError(
                f"{num_points} points are too few for encoder_padding 'valid' with kernels "
                f"{config.encoder_kernels} (need >= {min_points(config)}; or use 'same')"
            )
        self.aae_config = config
        self.num_points = int(num_points)
        self.normalization = PointNormalization(config.min_scale_angstrom, name="normalization")
        self.encoder = build_encoder(config, self.num_points, self.normalization)
        self.decoder = build_decoder(config, self.num_points)
        self.discriminator = build_discriminator(config)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.d_optimizer = _adam(config, config.discriminator_learning_rate)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ae_loss_tracker = keras.metrics.Mean(name="ae_loss")
        self.disc_loss_tracker = keras.metrics.Mean(name="disc_loss")
        self.gp_tracker = keras.metrics.Mean(name="gradient_penalty")
        self.built = True

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker, self.ae_loss_tracker, self.disc_loss_tracker, self.gp_tracker]

    def ae_variables(self) -> list[Any]:
        """Trainable weights of encoder + decoder (z_logvar's only when it is used)."""
        unused = set()
        if not self.aae_config.variational:
            unused = {id(v) for v in self.encoder.get_layer("z_logvar").trainable_weights}
        encoder = [v for v in self.encoder.trainable_weights if id(v) not in unused]
        return encoder + list(self.decoder.trainable_weights)

    def build_optimizers(self) -> None:
        """Create both optimizers' slots (needed before loading a saved optimizer state)."""
        self.optimizer.build(self.ae_variables())
        self.d_optimizer.build(self.discriminator.trainable_weights)

    # ----------------------------------------------------------------- forward

    def call(self, points: Any, training: bool = False) -> tuple[Any, Any]:
        """Raw clouds → (reconstruction in normalised units, z_mean)."""
        z_mean, _ = self.encoder(points, training=training)
        return self.decoder(z_mean, training=training), z_mean

    def latent(self, points: Any, training: bool) -> Any:
        """z: sampled around z_mean while training a variational encoder, else z_mean."""
        z_mean, z_logvar = self.encoder(points, training=training)
        if not (training and self.aae_config.variational):
            return z_mean
        clip = self.aae_config.logvar_clip
        z_logvar = ops.clip(z_logvar, -clip, clip)
        noise = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_logvar) * noise

    def _prior(self, batch: Any) -> Any:
        config = self.aae_config
        return keras.random.normal(
            (batch, config.latent_dim), mean=config.noise_mu, stddev=config.noise_std,
            seed=self.seed_generator,
        )

    def _gradient_penalty(self, prior: Any, z: Any) -> Any:
        """WGAN-GP: mean (|∇D(u)| - 1)² at random interpolates u of prior and codes."""
        import tensorflow as tf

        alpha = keras.random.uniform((ops.shape(z)[0], 1), seed=self.seed_generator)
        between = prior + alpha * (ops.stop_gradient(z) - prior)
        with tf.GradientTape() as tape:
            tape.watch(between)
            score = self.discriminator(between, training=True)
        grads = tape.gradient(score, between)
        slopes = ops.sqrt(ops.sum(ops.square(grads), axis=1) + GP_EPSILON)
        return ops.mean(ops.square(slopes - 1.0))

    # ----------------------------------------------------------------- steps

    def train_step(self, data: Any) -> dict[str, Any]:
        import tensorflow as tf

        points = data[0] if isinstance(data, tuple | list) else data
        config = self.aae_config
        ae_vars, d_vars = self.ae_variables(), self.discriminator.trainable_weights
        with tf.GradientTape(persistent=True) as tape:
            target = self.normalization(points)
            z = self.latent(points, training=True)
            chamfer = ops.mean(chamfer_distance(target, self.decoder(z, training=True)))
            prior = self._prior(ops.shape(z)[0])
            fake = ops.mean(self.discriminator(z, training=True))
            real = ops.mean(self.discriminator(prior, training=True))
            penalty = self._gradient_penalty(prior, z)
            disc_loss = fake - real + config.lambda_gp * penalty
            ae_loss = -fake + config.lambda_rec * chamfer
        self.d_optimizer.apply_gradients(zip(tape.gradient(disc_loss, d_vars), d_vars, strict=True))
        self.optimizer.apply_gradients(zip(tape.gradient(ae_loss, ae_vars), ae_vars, strict=True))
        del tape
        self.loss_tracker.update_state(chamfer * ops.square(self.normalization.scale()))
        self.ae_loss_tracker.update_state(ae_loss)
        self.disc_loss_tracker.update_state(disc_loss)
        self.gp_tracker.update_state(penalty)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data: Any) -> dict[str, Any]:
        points = data[0] if isinstance(data, tuple | list) else data
        target = self.normalization(points)
        reconstruction, _ = self(points, training=False)
        chamfer = ops.mean(chamfer_distance(target, reconstruction))
        self.loss_tracker.update_state(chamfer * ops.square(self.normalization.scale()))
        return {"loss": self.loss_tracker.result()}


def _adam(config: AAEConfig, learning_rate: float) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(
        learning_rate=learning_rate, beta_1=config.beta_1, beta_2=config.beta_2
    )


# --------------------------------------------------------------------------- interface


class AAEModel(LatentModel):
    """The 3dAAE behind the `LatentModel` interface: learns from `positions` (F, points, 3), Å."""

    kind = MODEL_KINDS["aae"]

    def __init__(
        self,
        network: AAE3d,
        input_points: int,
        seed: int | None = None,
        extra_metadata: dict[str, Any] | None = None,
    ) -> None:
        self.network = network
        self.input_points = int(input_points)
        self.extra_metadata: dict[str, Any] = dict(extra_metadata or {})
        self._rng = np.random.default_rng(seed)
        indices = network.aae_config.point_indices
        self._indices = None if indices is None else np.asarray(indices, dtype=np.int64)

    @property
    def config(self) -> AAEConfig:
        return self.network.aae_config

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def num_points(self) -> int:
        return self.network.num_points

    # ----------------------------------------------------------------- construction

    @classmethod
    def create(
        cls,
        config: AAEConfig,
        input_points: int,
        seed: int | None = None,
        extra_metadata: dict[str, Any] | None = None,
    ) -> AAEModel:
        """A compiled, untrained 3dAAE for clouds of `input_points` streamed points."""
        if keras.backend.backend() != "tensorflow":
            raise NotImplementedError(
                "the 3dAAE train step uses tf.GradientTape; run with KERAS_BACKEND=tensorflow"
            )
        num_points = _selected_points(config, input_points)
        network = AAE3d(config, num_points, seed=seed)
        network.compile(optimizer=_adam(config, config.learning_rate), jit_compile=False)
        network.build_optimizers()
        logger.debug("built 3dAAE for %d points, %d parameters", num_points, network.count_params())
        return cls(network, input_points, seed=seed, extra_metadata=extra_metadata)

    @classmethod
    def build(
        cls,
        config: AAEConfig,
        sample: np.ndarray,
        seed: int | None = None,
        extra_metadata: dict[str, Any] | None = None,
    ) -> AAEModel:
        shape = np.shape(sample)
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"positions must have shape (frames, points, 3), got {shape}")
        model = cls.create(config, shape[1], seed=seed, extra_metadata=extra_metadata)
        logger.info("built 3dAAE for %d of %d points", model.num_points, model.input_points)
        return model

    # ----------------------------------------------------------------- input

    def prepare(self, positions: np.ndarray) -> np.ndarray:
        """(F, input_points, 3) → float32 (F, num_points, 3), the chosen points, still in Å.

        Centring and scaling happen inside the network (`PointNormalization`).
        """
        positions = self._check(positions)
        if self._indices is not None:
            positions = positions[:, self._indices]
        return np.asarray(positions, dtype=np.float32)

    def _check(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions) if not hasattr(positions, "shape") else positions
        if positions.ndim != 3 or positions.shape[2] != 3:
            raise ValueError(
                f"positions must have shape (frames, points, 3), got {tuple(positions.shape)}"
            )
        if positions.shape[1] != self.input_points:
            raise ValueError(
                f"positions have {positions.shape[1]} points but the model was built for "
                f"{self.input_points}"
            )
        return positions

    def input_statistics(self) -> dict[str, float]:
        """Centring/scaling the network applies: scale (Å) and the statistics behind it."""
        return self.network.normalization.statistics()

    def update_input_statistics(self, positions: np.ndarray) -> None:
        """Fold clouds into the running scale (done by `fit` on its training data)."""
        prepared_chunks = (
            self.prepare(positions[start : start + STATS_CHUNK])
            for start in range(0, len(positions), STATS_CHUNK)
        )
        for chunk in prepared_chunks:
            self.network.normalization.update(chunk)

    # ----------------------------------------------------------------- interface

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
        train = self._check(train)
        if len(train) == 0:
            raise ValueError("no training clouds")
        self.update_input_statistics(train)
        batches = ArrayBatches(train, self.prepare, batch_size, shuffle=True, rng=self._rng)
        val_batches = None
        if val is not None and len(val) > 0:
            val_batches = ArrayBatches(self._check(val), self.prepare, batch_size, shuffle=False)
        return fit_batches(self.network, batches, val_batches, epochs, callbacks, restore_best,
                           verbose)

    def evaluate(self, x: np.ndarray, batch_size: int = 256) -> dict[str, float]:
        x = self._check(x)
        if len(x) == 0:
            raise ValueError("no clouds to evaluate")
        return evaluate_batches(
            self.network, ArrayBatches(x, self.prepare, batch_size, shuffle=False)
        )

    def encode(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        x = self._check(x)
        return encode_batches(self.network.encoder, x, self.prepare, self.latent_dim, batch_size)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """decode(z_mean) in Å, centred (for inspection; small batches)."""
        reconstruction, _ = self.network.predict_on_batch(self.prepare(x))
        return np.asarray(reconstruction) * self.input_statistics()["scale"]

    # ----------------------------------------------------------------- persistence

    def metadata(self) -> dict[str, Any]:
        return model_metadata(
            FORMAT,
            FORMAT_VERSION,
            self.config,
            self.extra_metadata,
            input_field=self.input_field,
            input_points=self.input_points,
            num_points=self.num_points,
            latent_dim=self.latent_dim,
            input_preparation={
                "centre": "per-cloud centroid of the chosen points (equal weights)",
                "units": "angstrom",
                **self.input_statistics(),
            },
        )

    def save(self, directory: str | Path) -> None:
        save_model_files(directory, self.network, self.metadata())

    @classmethod
    def load(cls, directory: str | Path, seed: int | None = None) -> AAEModel:
        directory = Path(directory)
        meta = read_model_meta(directory, FORMAT, FORMAT_VERSION)
        config = AAEConfig.model_validate(meta["config"])
        model = cls.create(config, int(meta["input_points"]), seed=seed,
                           extra_metadata=meta.get("extra"))
        load_weights(model.network, directory)
        _check_statistics(model, meta, directory)
        return model


def _selected_points(config: AAEConfig, input_points: int) -> int:
    if input_points < 1:
        raise ValueError(f"clouds need at least one point, got {input_points}")
    if config.point_indices is None:
        return input_points
    if max(config.point_indices) >= input_points:
        raise ValueError(
            f"point_indices go up to {max(config.point_indices)} but the clouds have "
            f"{input_points} points"
        )
    return len(config.point_indices)


def _check_statistics(model: AAEModel, meta: dict[str, Any], directory: Path) -> None:
    """The loaded weights must hold the input scale that model.json records."""
    recorded = meta.get("input_preparation", {}).get("scale")
    loaded = model.input_statistics()["scale"]
    if recorded is not None and not np.isclose(recorded, loaded, rtol=1e-5):
        raise ValueError(
            f"{directory}: input scale {loaded} in the weights differs from {recorded} in "
            f"{MODEL_META_FILE}"
        )
