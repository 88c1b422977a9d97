"""Configuration of a whole run: pydantic models, YAML loading, readable errors.

`python -m ddmd_stream.config check FILE` validates a config and prints the resolved result;
`python -m ddmd_stream.config schema` prints a documented example YAML.
"""

from __future__ import annotations

import difflib
import logging
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ddmd_stream.errors import InputError

logger = logging.getLogger(__name__)

PACKAGE_DATA = Path(str(resources.files("ddmd_stream") / "data"))
DEFAULT_PDB = PACKAGE_DATA / "fs-peptide.pdb"
DEFAULT_XML_NAME = "adios_xml/sst.xml"

PositiveFloat = Annotated[float, Field(gt=0)]


class ConfigError(InputError):
    """A config file (or a value in it) is wrong; the message says where and how to fix it."""


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WorkflowConfig(Section):
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
    stop_catalog_outliers: int | None = Field(
        None, ge=1, description="Stop once the outlier catalog holds this many records."
    )
    heartbeat_s: PositiveFloat = Field(
        5.0, description="Seconds between task heartbeats (status.json)."
    )
    max_task_restarts: int = Field(3, ge=0, le=100, description="Restarts allowed per failed task.")
    on_existing: Literal["refuse", "resume", "overwrite"] = Field(
        "refuse", description="What to do when run_dir already holds a run."
    )


class SimulationConfig(Section):
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
        None, description="Folded reference for RMSD (Cα); defaults to pdb_file."
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
    positions: Literal["ca", "all"] = Field("ca", description="Stream Cα or all-atom positions.")
    stream_velocities: bool = Field(
        True, description="Stream velocities (for restarts that copy them)."
    )
    contact_cutoff_angstrom: PositiveFloat = Field(8.0, description="Cα–Cα contact cutoff (Å).")
    restart_policy: Literal["random", "rank"] = Field(
        "random",
        description="Pick a random catalog entry, or the i-th lowest-RMSD entry for simulation i.",
    )
    velocity_copy_probability: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Chance of copying an outlier's velocities, else drawn at temperature.",
    )
    seed: int | None = Field(
        None, ge=0, description="Random seed (per simulation offset by its id)."
    )

    @field_validator("initial_structures", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
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

    @property
    def steps_per_report(self) -> int:
        return max(1, round(self.report_interval_ps * 1000.0 / self.timestep_fs))

    @property
    def reports_per_segment(self) -> int:
        return max(1, round(self.segment_length_ns * 1000.0 / self.report_interval_ps))


class AggregationConfig(Section):
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
    max_samples: int = Field(80_000, ge=1, description="Most recent frames examined per cycle.")
    min_samples: int = Field(20, ge=1, description="Frames needed before a cycle runs.")
    detector: Literal["auto", "dbscan", "lof"] = Field(
        "auto",
        description="Outlier detector in latent space; "
        "auto = the model's own (CVAE: dbscan, 3dAAE: lof).",
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
    ranking: Literal["rmsd", "score", "random"] = Field(
        "rmsd", description="How outliers are ranked."
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
    adios_xml: Path | None = Field(
        None,
        description=f"ADIOS2 XML with the IOs below; default: the repository's {DEFAULT_XML_NAME}.",
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


def _shell_line(value: str) -> str:
    if not value.strip():
        raise ValueError("empty line (remove it, or write a shell command)")
    return value


ShellLine = Annotated[StrictStr, AfterValidator(_shell_line)]


class RoleResources(Section):
    """What one task of a role asks for, and how it is started."""

    cpus: int = Field(1, ge=1, description="CPU cores per task.")
    gpus: int = Field(0, ge=0, description="GPUs per task.")
    pre_exec: list[ShellLine] = Field(
        [], description="Shell lines run before the task (after resources.pre_exec)."
    )
    environment: dict[str, str] = Field({}, description="Environment variables of the task.")
    python: str | None = Field(
        None, min_length=1, description="Python interpreter for the task (default: the launcher's)."
    )


class ResourcesConfig(Section):
    resource: str = Field(
        "local.localhost", min_length=1, description="RADICAL-Pilot resource label."
    )
    access_schema: str = Field("local", description="RADICAL-Pilot access schema.")
    project: str | None = Field(None, description="Allocation/account to charge.")
    queue: str | None = Field(None, description="Batch queue/partition.")
    walltime_min: int = Field(30, ge=1, description="Pilot wall time (minutes).")
    nodes: int = Field(1, ge=1, description="Nodes for the pilot.")
    cores_per_node: int | None = Field(
        None,
        ge=1,
        description="Cores per node RADICAL may use (local default: enough for all tasks).",
    )
    gpus_per_node: int = Field(0, ge=0, description="GPUs per node.")
    pre_exec: list[ShellLine] = Field(
        [], description="Shell lines run before every task (e.g. module load, source activate)."
    )
    environment: dict[str, str] = Field({}, description="Environment variables of every task.")
    sim: RoleResources = Field(
        default_factory=RoleResources, description="Each simulation task."
    )
    aggregator: RoleResources = Field(default_factory=RoleResources, description="Each aggregator.")
    trainer: RoleResources = Field(default_factory=RoleResources, description="The trainer.")
    agent: RoleResources = Field(default_factory=RoleResources, description="The agent.")
    network_interface: str = Field(
        "lo", min_length=1, description="Interface for RADICAL and ADIOS traffic."
    )
    simulations_per_gpu: int = Field(
        1,
        ge=1,
        le=64,
        description="Simulations sharing one GPU (each simulation task then asks for one "
        "1/N GPU slot; a small protein does not fill a modern GPU). Needs resources.sim.gpus: 1.",
    )
    mps: Literal["auto", "on", "off"] = Field(
        "auto",
        description="NVIDIA MPS control daemon for simulations that share a GPU: auto = on when "
        "simulations_per_gpu > 1 and simulations use GPUs (docs/gpu.md).",
    )

    @property
    def is_local(self) -> bool:
        """This machine (RADICAL's local.* resources) rather than a cluster."""
        return self.resource.startswith("local.")

    @property
    def mps_enabled(self) -> bool:
        """Whether simulations run under an MPS daemon (only when they use GPUs)."""
        if self.sim.gpus == 0 or self.mps == "off":
            return False
        return self.mps == "on" or self.simulations_per_gpu > 1

    @model_validator(mode="after")
    def _packing_needs_one_gpu(self) -> ResourcesConfig:
        if self.simulations_per_gpu > 1 and self.sim.gpus != 1:
            raise ValueError(
                f"simulations_per_gpu: {self.simulations_per_gpu} simulations share a "
                f"GPU, so each simulation task needs resources.sim.gpus: 1 "
                f"(got {self.sim.gpus})"
            )
        return self


class RunConfig(Section):
    workflow: WorkflowConfig = Field(
        default_factory=WorkflowConfig, description="Run-wide settings."
    )
    simulation: SimulationConfig = Field(
        default_factory=SimulationConfig, description="MD settings."
    )
    aggregation: AggregationConfig = Field(
        default_factory=AggregationConfig, description="Aggregators."
    )
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Model trainer.")
    agent: AgentConfig = Field(default_factory=AgentConfig, description="Outlier agent.")
    streams: StreamsConfig = Field(default_factory=StreamsConfig, description="ADIOS2 streams.")
    resources: ResourcesConfig = Field(
        default_factory=ResourcesConfig, description="Where tasks run."
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        aggregators, simulations = (
            self.aggregation.num_aggregators,
            self.simulation.num_simulations,
        )
        if aggregators > simulations:
            raise ValueError(
                f"aggregation.num_aggregators: {aggregators} is more than "
                f"simulation.num_simulations ({simulations}); each aggregator needs a simulation"
            )
        if self.simulation.solvent == "implicit" and not any(
            "obc" in f or "gbn" in f or "implicit" in f for f in self.simulation.forcefield
        ):
            raise ValueError(
                f"simulation.forcefield: {self.simulation.forcefield} has no implicit-solvent XML "
                "but simulation.solvent is implicit (add e.g. amber99_obc.xml, or set "
                "simulation.solvent: vacuum)"
            )
        return self


# --------------------------------------------------------------------------- loading


def repository_root() -> Path:
    """The source tree holding this package (for the shipped adios_xml/ and launch/)."""
    return Path(__file__).resolve().parent.parent


def default_adios_xml() -> Path:
    return repository_root() / DEFAULT_XML_NAME


def _section_model(loc: tuple) -> type[BaseModel]:
    """The model of the section that holds the key at `loc`."""
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model


def _describe_error(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    location = ".".join(str(p) for p in loc)
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        allowed = list(_section_model(loc).model_fields)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{location}: unknown key; {hint}allowed: {', '.join(allowed)}"
    if not loc:  # checks across sections name their fields themselves
        return message
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    if err["type"] == "model_type":  # a section given as something other than a mapping
        section = _section_model((*loc, "")).__name__
        message = f"must be a mapping of {section} fields"
    return f"{location}: {message}{shown}"


def format_validation_error(source: str, error: ValidationError) -> str:
    lines = [_describe_error(e) for e in error.errors()]
    return f"{source}: invalid config: " + "; ".join(lines)


def _resolve_paths(model: BaseModel, base: Path) -> None:
    """Make every relative Path field absolute against `base` (the YAML file's folder)."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            _resolve_paths(value, base)
        elif isinstance(value, Path):
            object.__setattr__(model, name, (base / value.expanduser()).resolve())
        elif isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
            object.__setattr__(model, name, [(base / v.expanduser()).resolve() for v in value])


def _resolve_forcefields(simulation: SimulationConfig, base: Path) -> None:
    """Force field entries that name files beside the YAML become absolute paths.

    Other entries are OpenMM's built-in names (amber99sbildn.xml, ...) and stay as they are.
    """
    resolved = []
    for entry in simulation.forcefield:
        candidate = base / Path(entry).expanduser()
        resolved.append(str(candidate.resolve()) if candidate.is_file() else entry)
    object.__setattr__(simulation, "forcefield", resolved)


def parse_config(
    data: dict[str, Any] | None, source: str = "<config>", base: Path | None = None
) -> RunConfig:
    """Validate a config mapping; relative paths resolve against `base`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping of sections "
            f"({', '.join(RunConfig.model_fields)}), got {type(data).__name__}"
        )
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(source, error)) from None
    _resolve_paths(config, base or Path.cwd())
    _resolve_forcefields(config.simulation, base or Path.cwd())
    if config.streams.adios_xml is None:
        object.__setattr__(config.streams, "adios_xml", default_adios_xml())
    return config


def load_config(path: str | Path) -> RunConfig:
    """Load and validate a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (give the path of a YAML file)")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the config: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_config(data, str(path), path.resolve().parent)


def check_inputs(config: RunConfig) -> list[str]:
    """Problems with files the config names (missing PDBs, XML); empty when all is well."""
    problems = []
    sim = config.simulation
    for field, path in (
        ("simulation.pdb_file", sim.pdb_file),
        ("simulation.reference_pdb", sim.reference_pdb),
        *(("simulation.initial_structures", p) for p in sim.initial_structures),
    ):
        if path is not None and not path.exists():
            problems.append(f"{field}: file not found: {path}")
    if sim.initial_structures and all(p.exists() for p in sim.initial_structures) \
            and not sim.structures():
        problems.append("simulation.initial_structures: no *.pdb files in "
                        f"{[str(p) for p in sim.initial_structures]}")
    xml = config.streams.adios_xml
    if xml is not None and not xml.is_file():
        problems.append(f"streams.adios_xml: file not found: {xml}")
    return problems


def dump_config(config: RunConfig) -> str:
    """The config as YAML (paths as strings), suitable for `load_config`."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def save_config(config: RunConfig, path: Path) -> None:
    path.write_text(dump_config(config))


# --------------------------------------------------------------------------- example YAML


def _example_lines(model: type[BaseModel], indent: int) -> list[str]:
    lines: list[str] = []
    pad = "  " * indent
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.append(f"{pad}# {field.description}")
            lines.append(f"{pad}{name}:")
            lines.extend(_example_lines(annotation, indent + 1))
            continue
        default = field.get_default(call_default_factory=True)
        if default == DEFAULT_PDB:  # machine-specific: shown, but left to the default
            lines.append(f"{pad}# {name}: <packaged {DEFAULT_PDB.name}>  # {field.description}")
            continue
        if isinstance(default, Path):
            default = str(default)
        if isinstance(default, tuple):
            default = list(default)
        value = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...")
        lines.append(f"{pad}{name}: {value.strip()}  # {field.description}")
    return lines


def example_yaml() -> str:
    """A documented example config with every field at its default."""
    header = "# ddmd_stream run configuration (all defaults)"
    return "\n".join([header, *_example_lines(RunConfig, 0)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m ddmd_stream.config", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a config and print the resolved result")
    check.add_argument("file", type=Path)
    sub.add_parser("schema", help="print a documented example YAML")
    args = parser.parse_args(argv)
    if args.command == "schema":
        sys.stdout.write(example_yaml())
        return 0
    try:
        config = load_config(args.file)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    problems = check_inputs(config)
    sys.stdout.write(dump_config(config))
    for problem in problems:
        print(f"error: {args.file}: {problem}", file=sys.stderr)
    return 2 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
