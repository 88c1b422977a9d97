"""The sections of a run config, one per role (plus run-wide and stream settings).

Declarative pydantic models: each field has its default, bounds and a `description` that
`python -m ddmd_stream.config schema` prints. Checks that span sections live in `run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ddmd_stream.config.defaults import DEFAULT_PDB, DEFAULT_XML_NAME

PositiveFloat = Annotated[float, Field(gt=0)]


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WorkflowConfig(Section):
    """Run-wide settings: pattern, engine, duration and stop conditions."""

    run_dir: Path = Field(
        Path("runs/ddmd"), description="Run directory; everything of a run goes here."
    )
    mode: Literal["streaming", "sequential", "plain"] = Field(
        "streaming",
        description="Workflow pattern: streaming (DeepDriveMD-S, all roles at once); sequential "
        "(DeepDriveMD-F: stages of one segment per simulation, then training, then the agent); "
        "plain (simulations + aggregators only, no steering: the control for sampling).",
    )
    train_every: int = Field(
        1, ge=1, description="sequential: run the training stage every this many iterations."
    )
    max_iterations: int | None = Field(
        None,
        ge=1,
        description="sequential: stop after this many iterations (none: at duration_s).",
    )
    engine: Literal["entk", "local"] = Field(
        "entk",
        description="Task engine: RADICAL-EnTK (default) or plain subprocesses for debugging.",
    )
    duration_s: PositiveFloat = Field(
        600.0, description="Wall time of the run in seconds; tasks stop by then."
    )
    stop_min_rmsd_angstrom: float | None = Field(
        None, ge=0, description="Stop once any frame comes this close (RMSD, Å) to the reference."
    )
    stop_total_ns: PositiveFloat | None = Field(
        None, description="Stop once the simulations together have simulated this many ns."
    )
    stop_catalog_outliers: int | None = Field(
        None, ge=1, description="Stop once the outlier catalog holds this many records."
    )
    heartbeat_s: PositiveFloat = Field(
        5.0, description="Seconds between task heartbeats (status.json)."
    )
    stop_grace_s: float = Field(
        60.0,
        ge=0,
        description="Seconds the tasks get to exit by themselves once STOP is written (wall "
        "time, target, STOP file, Ctrl-C); then the launcher SIGTERMs what is left of them and "
        "SIGKILLs it 5 s later. A second Ctrl-C does so at once.",
    )
    live_page_s: PositiveFloat | None = Field(
        60.0,
        description="Seconds between updates of the live page RUN/report/index.html while the "
        "run goes (drawn by a child process of the launcher; the page reloads itself as "
        "often); none: no live page.",
    )
    max_task_restarts: int = Field(3, ge=0, le=100, description="Restarts allowed per failed task.")
    on_existing: Literal["refuse", "resume", "overwrite"] = Field(
        "refuse", description="What to do when run_dir already holds a run."
    )


class SimulationConfig(Section):
    """The MD simulations: system, integrator, streamed data and restarts."""

    num_simulations: int = Field(
        2, ge=1, le=100_000, description="Number of concurrent simulations."
    )
    pdb_file: Path = Field(DEFAULT_PDB, description="Starting structure (PDB).")
    initial_structures: list[Path] = Field(
        [],
        description="Starting structures: PDB files and/or folders of them (sorted *.pdb); "
        "simulation i starts from structure i mod n. Empty: pdb_file.",
    )
    reference_pdb: Path | None = Field(
        None,
        description="Target structure for RMSD (Cα), e.g. the folded state; none: RMSD to "
        "pdb_file is reported, and outliers are ranked by novelty (agent.ranking: auto).",
    )
    forcefield: list[str] = Field(
        ["amber99sbildn.xml", "amber99_obc.xml"],
        min_length=1,
        description="OpenMM force field XML files (built-in names or paths).",
    )
    solvent: Literal["implicit", "explicit", "vacuum"] = Field(
        "implicit",
        description="Solvent model; implicit needs an implicit-solvent XML in forcefield.",
    )
    nonbonded_cutoff_nm: PositiveFloat | None = Field(
        None,
        description="Nonbonded cutoff in nm; none = NoCutoff (implicit) / 1.0 nm PME (explicit).",
    )
    constraints: Literal["none", "HBonds", "AllBonds", "HAngles"] = Field(
        "HBonds", description="Bond constraints."
    )
    temperature_k: PositiveFloat = Field(300.0, description="Langevin temperature (K).")
    pressure_bar: PositiveFloat | None = Field(
        1.0, description="Explicit solvent: Monte Carlo barostat pressure (bar); none = NVT."
    )
    minimize: bool = Field(
        True, description="Minimize the energy before a simulation's first segment."
    )
    equilibration_ps: float = Field(
        0.0, ge=0, description="MD after minimization, before the first frame (ps; not streamed)."
    )
    friction_per_ps: PositiveFloat = Field(1.0, description="Langevin friction (1/ps).")
    timestep_fs: float = Field(2.0, gt=0, le=10, description="Integration time step (fs).")
    report_interval_ps: PositiveFloat = Field(
        50.0, description="One streamed frame every this many ps."
    )
    segment_length_ns: PositiveFloat = Field(
        10.0, description="Length of one segment (ns); after each, restart from the catalog."
    )
    platform: Literal["auto", "CUDA", "OpenCL", "CPU", "Reference"] = Field(
        "auto", description="OpenMM platform; auto tries CUDA, OpenCL, then CPU."
    )
    precision: Literal["single", "mixed", "double"] = Field(
        "mixed", description="Precision on CUDA/OpenCL."
    )
    cpu_threads: int | None = Field(
        None, ge=1, description="Threads on the CPU platform (default: OpenMM's)."
    )
    positions: Literal["ca", "heavy", "all"] | list[int] = Field(
        "ca",
        description="Atoms whose positions are streamed (the 3dAAE's point cloud): ca, heavy "
        "(protein non-hydrogen atoms), all, or a list of atom indices.",
    )
    contact_atoms: Literal["ca", "heavy"] | list[int] = Field(
        "ca",
        description="Atoms of the contact map (the CVAE's input): ca, heavy (protein "
        "non-hydrogen atoms; for peptides with few residues), or a list of atom indices.",
    )
    stream_velocities: bool = Field(
        True, description="Stream velocities (for restarts that copy them)."
    )
    contact_cutoff_angstrom: PositiveFloat = Field(
        8.0, description="Contact cutoff (Å) between two contact_atoms."
    )
    restart_policy: Literal["random", "rank"] = Field(
        "random",
        description="Pick a random catalog entry, or the i-th lowest-RMSD entry for simulation i.",
    )
    velocity_copy_probability: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Chance of copying an outlier's velocities, else drawn at temperature.",
    )
    seed: int | None = Field(
        None, ge=0, description="Random seed (per simulation offset by its id)."
    )
    checkpoint_interval_ns: PositiveFloat | None = Field(
        None,
        description="Also checkpoint within a segment every this many ns (a checkpoint is "
        "always written after each segment); a simulation started again continues from it.",
    )

    @field_validator("initial_structures", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        """A single path is a list of one."""
        return [value] if isinstance(value, str | Path) else value

    def structures(self) -> list[Path]:
        """The starting structures in order (folders expanded to their sorted *.pdb files)."""
        found: list[Path] = []
        for path in self.initial_structures or [self.pdb_file]:
            found.extend(sorted(path.glob("*.pdb")) if path.is_dir() else [path])
        return found

    def structure_for(self, sim_id: int) -> tuple[int, Path]:
        """(index, path) of the structure simulation `sim_id` starts from."""
        structures = self.structures()
        index = sim_id % len(structures)
        return index, structures[index]

    @model_validator(mode="after")
    def _segment_holds_a_frame(self) -> SimulationConfig:
        if self.report_interval_ps > self.segment_length_ns * 1000.0:
            raise ValueError(
                f"report_interval_ps ({self.report_interval_ps:g} ps) is longer than "
                f"segment_length_ns ({self.segment_length_ns * 1000:g} ps): a segment would "
                "stream no frame; shorten the interval or lengthen the segment")
        return self

    @property
    def steps_per_report(self) -> int:
        """MD steps between streamed frames."""
        return max(1, round(self.report_interval_ps * 1000.0 / self.timestep_fs))

    @property
    def reports_per_segment(self) -> int:
        """Streamed frames per segment."""
        return max(1, round(self.segment_length_ns * 1000.0 / self.report_interval_ps))


class AggregationConfig(Section):
    """The aggregators that batch the simulations' frames into one stream each."""

    num_aggregators: int = Field(
        1, ge=1, description="Aggregators; simulations are split among them."
    )
    flush_interval_s: PositiveFloat = Field(
        0.5, le=60, description="New frames become one BP step at least this often (s)."
    )
    idle_backoff_max_s: PositiveFloat = Field(
        0.5, description="Longest sleep between polls when idle (s)."
    )


class CVAEConfig(Section):
    """Convolutional variational autoencoder on contact maps."""

    latent_dim: int = Field(10, ge=1, le=1024, description="Latent dimension.")
    conv_filters: list[int] = Field(
        [64, 64, 64, 64], min_length=1, description="Filters per Conv2D layer."
    )
    conv_kernels: list[int] = Field(
        [3, 3, 3, 3], min_length=1, description="Kernel size per layer."
    )
    conv_strides: list[int] = Field([1, 2, 1, 1], min_length=1, description="Stride per layer.")
    dense_units: int = Field(
        128, ge=1, description="Units of the dense layer after the convolutions."
    )
    dropout: float = Field(0.25, ge=0, lt=1, description="Dropout after the dense layer.")
    learning_rate: PositiveFloat = Field(1e-3, description="RMSprop learning rate.")
    rho: float = Field(0.9, gt=0, lt=1, description="RMSprop rho.")
    epsilon: PositiveFloat = Field(1e-8, description="RMSprop epsilon.")
    kl_weight: float = Field(1.0, ge=0, description="Weight of the KL term.")
    logvar_clip: PositiveFloat = Field(10.0, description="Log-variance is clamped to ±this.")
    clipnorm: PositiveFloat = Field(1.0, description="Gradient norm clipping.")

    @model_validator(mode="after")
    def _layers_agree(self) -> CVAEConfig:
        lengths = (len(self.conv_filters), len(self.conv_kernels), len(self.conv_strides))
        if len(set(lengths)) != 1:
            raise ValueError(
                "conv_filters, conv_kernels and conv_strides must list one entry per layer "
                f"(got {lengths[0]}, {lengths[1]} and {lengths[2]} entries)"
            )
        return self


class AAEConfig(Section):
    """3D adversarial autoencoder (3dAAE) on Cα point clouds; defaults as in DeepDriveMD/mdlearn."""

    latent_dim: int = Field(16, ge=1, le=1024, description="Latent dimension.")
    point_indices: list[int] | None = Field(
        None,
        description="Indices of the streamed positions used as points "
        "(default: all, i.e. every Cα).",
    )
    encoder_filters: list[int] = Field(
        [64, 128, 256, 256, 512],
        min_length=2,
        description="Filters per Conv1D layer (over points).",
    )
    encoder_kernels: list[int] = Field(
        [5, 5, 3, 1, 1], min_length=2, description="Kernel size per Conv1D layer."
    )
    encoder_padding: Literal["same", "valid"] = Field(
        "same", description="Conv1D padding; `valid` needs at least sum(kernels - 1) + 1 points."
    )
    encoder_relu_slope: float = Field(
        0.0, ge=0, lt=1, description="LeakyReLU slope in the encoder (0 = ReLU)."
    )
    variational: bool = Field(
        True,
        description="Encoder samples z ~ N(mean, var) while training (encoding uses the mean).",
    )
    logvar_clip: PositiveFloat = Field(
        10.0, description="Encoder log-variance is clamped to ±this."
    )
    decoder_widths: list[int] = Field(
        [64, 128, 512, 1024],
        min_length=1,
        description="Dense widths of the decoder (then N×3 outputs).",
    )
    decoder_relu_slope: float = Field(
        0.0, ge=0, lt=1, description="LeakyReLU slope in the decoder (0 = ReLU)."
    )
    discriminator_widths: list[int] = Field(
        [512, 128, 64],
        min_length=1,
        description="Dense widths of the latent discriminator (then 1 output).",
    )
    discriminator_relu_slope: float = Field(
        0.0, ge=0, lt=1, description="LeakyReLU slope in the discriminator (0 = ReLU)."
    )
    noise_mu: float = Field(0.0, description="Mean of the Gaussian prior on the latent space.")
    noise_std: PositiveFloat = Field(1.0, description="Standard deviation of the Gaussian prior.")
    lambda_rec: float = Field(0.5, ge=0, description="Weight of the Chamfer reconstruction loss.")
    lambda_gp: float = Field(10.0, ge=0, description="Weight of the WGAN gradient penalty.")
    learning_rate: PositiveFloat = Field(
        1e-4, description="Adam learning rate of encoder + decoder."
    )
    discriminator_learning_rate: PositiveFloat = Field(
        1e-4, description="Adam learning rate of the discriminator."
    )
    beta_1: float = Field(0.9, gt=0, lt=1, description="Adam beta_1 (both optimizers).")
    beta_2: float = Field(0.999, gt=0, lt=1, description="Adam beta_2 (both optimizers).")
    min_scale_angstrom: PositiveFloat = Field(
        1e-3, description="Floor of the input scale (RMS radius of the clouds seen, Å)."
    )

    @model_validator(mode="after")
    def _layers_agree(self) -> AAEConfig:
        if len(self.encoder_filters) != len(self.encoder_kernels):
            raise ValueError("encoder_filters and encoder_kernels must have the same length")
        if self.point_indices is not None and (
            not self.point_indices
            or min(self.point_indices) < 0
            or len(set(self.point_indices)) != len(self.point_indices)
        ):
            raise ValueError("point_indices must be distinct indices >= 0 (or null for all points)")
        return self


ModelName = Literal["cvae", "aae"]


class TrainingConfig(Section):
    """The trainer: which model, its hyperparameters and the training window."""

    model: ModelName = Field(
        "cvae", description="Model: cvae (contact maps) or aae (3dAAE on Cα point clouds)."
    )
    cvae: CVAEConfig = Field(default_factory=CVAEConfig, description="CVAE hyperparameters.")
    aae: AAEConfig = Field(default_factory=AAEConfig, description="3dAAE hyperparameters.")
    max_samples: int = Field(80_000, ge=1, description="Window of most recent frames kept.")
    min_samples: int = Field(100, ge=1, description="Samples needed before the first round.")
    epochs: int = Field(10, ge=1, description="Epochs per training round.")
    batch_size: int = Field(32, ge=1, description="Mini-batch size.")
    validation_split: float = Field(0.2, gt=0, lt=1, description="Share of the window held out.")
    validation_block_frames: int = Field(
        20, ge=1, description="Validation frames are held out in blocks of this many "
        "consecutive frames of one simulation."
    )
    round_interval_s: float = Field(0.0, ge=0, description="Least time between round starts (s).")
    keep_models: int = Field(
        5, ge=1, description="Published model versions kept on disk (older pruned)."
    )
    seed: int | None = Field(None, ge=0, description="Random seed.")
    backend: Literal["tensorflow", "torch"] = Field(
        "tensorflow",
        description="Keras 3 backend of the trainer and the agent (KERAS_BACKEND); torch lets "
        "GPU machines without TensorFlow train the CVAE. The 3dAAE needs tensorflow.",
    )

    @model_validator(mode="after")
    def _backend_supports_model(self) -> TrainingConfig:
        if self.model == "aae" and self.backend != "tensorflow":
            raise ValueError(
                f"backend: the 3dAAE's train step uses tf.GradientTape and needs "
                f"tensorflow (got {self.backend}); use training.model: cvae or backend tensorflow"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _legacy_model_section(cls, data: Any) -> Any:
        """Older configs had the CVAE hyperparameters under `model`; they now live under `cvae`."""
        if isinstance(data, dict) and isinstance(data.get("model"), dict):
            if "cvae" in data:
                raise ValueError(
                    "give the CVAE hyperparameters under `cvae` only (`model` is cvae | aae)"
                )
            data = {**data, "cvae": data["model"], "model": "cvae"}
        return data

    @property
    def model_settings(self) -> CVAEConfig | AAEConfig:
        """The hyperparameters of the selected model (`cvae` or `aae` section)."""
        return self.cvae if self.model == "cvae" else self.aae


class AgentConfig(Section):
    """The agent: outlier detection in latent space and their ranking."""

    max_samples: int = Field(80_000, ge=1, description="Most recent frames examined per cycle.")
    min_samples: int = Field(20, ge=1, description="Frames needed before a cycle runs.")
    detector: Literal["auto", "dbscan", "lof", "uniform"] = Field(
        "auto",
        description="Outlier detector in latent space; "
        "auto = the model's own (CVAE: dbscan, 3dAAE: lof); uniform = n_outliers frames drawn "
        "at random (the control that restarts without steering).",
    )
    eps: PositiveFloat = Field(
        0.2,
        description="Initial DBSCAN eps, kept when the sampled k-distances predict a count in "
        "band; else the first cycle (and the first under each new model) starts from them. "
        "Adapted between cycles.",
    )
    dbscan_min_samples: int = Field(10, ge=1, description="DBSCAN min_samples.")
    outlier_band: tuple[int, int] = Field(
        (1000, 5000), description="Target [low, high] outlier count; eps is adapted to stay inside."
    )
    eps_factor: float = Field(1.25, gt=1, description="Multiplicative eps step when out of band.")
    lof_neighbors: int = Field(20, ge=1, description="LOF n_neighbors.")
    n_outliers: int = Field(500, ge=1, description="Top outliers published per cycle.")
    ranking: Literal["auto", "rmsd", "score", "random"] = Field(
        "auto",
        description="The steering objective: rmsd = lowest RMSD to simulation.reference_pdb "
        "first (needs a reference that is not a starting structure); score = most outlying "
        "first (novelty); random; auto = rmsd with a reference_pdb, else score.",
    )
    encode_batch_size: int = Field(1024, ge=1, description="Batch size for encoding.")
    cycle_interval_s: float = Field(5.0, ge=0, description="Least time between cycle starts (s).")
    seed: int | None = Field(None, ge=0, description="Random seed (random ranking).")

    @field_validator("outlier_band")
    @classmethod
    def _band_ordered(cls, band: tuple[int, int]) -> tuple[int, int]:
        low, high = band
        if not 0 <= low <= high:
            raise ValueError("must be [low, high] with 0 <= low <= high")
        return band


class StreamsConfig(Section):
    """ADIOS2 streams between the roles."""

    adios_xml: Path | None = Field(
        None,
        description=f"ADIOS2 XML with the IOs below; default: the packaged {DEFAULT_XML_NAME}.",
    )
    simulation_io: str = Field(
        "SimulationOutput", min_length=1, description="IO: simulation → aggregator."
    )
    aggregator_io: str = Field(
        "AggregatorOutput", min_length=1, description="IO: aggregator → store."
    )
    open_timeout_s: PositiveFloat = Field(
        120.0, description="Longest wait for a stream's peer to open."
    )
    liveness_timeout_s: PositiveFloat = Field(
        30.0,
        description="A file stream whose writer's heartbeat is older than this is taken as dead.",
    )
    node_local_path: Path | None = Field(
        None, description="Node-local scratch for SST contact files (default: the run directory)."
    )
