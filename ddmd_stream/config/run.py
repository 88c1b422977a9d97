"""Where tasks run (`resources`) and the whole run (`RunConfig`), with checks across sections.

Apart from `sections` because these models tie the role sections together: a check here may
look at several sections at once, and its message names every field it involves.
"""

from __future__ import annotations

import importlib.util
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StrictStr, model_validator

from ddmd_stream.config.sections import (
    AgentConfig,
    AggregationConfig,
    Section,
    SimulationConfig,
    StreamsConfig,
    TrainingConfig,
    WorkflowConfig,
)

IMPLICIT_SOLVENT_MARKERS = ("obc", "gbn", "implicit")


def _shell_line(value: str) -> str:
    """A pre_exec line must hold a command."""
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
    nice: int = Field(
        0, ge=0, le=19,
        description="Lower the task's CPU priority by this much (os.nice). On a machine with "
        "fewer cores than tasks, a higher value for simulations than for the trainer and agent "
        "keeps the steering from lagging behind the simulations it steers.",
    )
    python: str | None = Field(
        None, min_length=1, description="Python interpreter for the task (default: the launcher's)."
    )


class AgentResources(RoleResources):
    """The agent's task: a role's resources plus MPI ranks (the only role that has them)."""

    ranks: int = Field(
        1, ge=1,
        description="MPI ranks of the agent task: the ranks share the encoding of each cycle's "
        "new frames, rank 0 detects, ranks and publishes (ddmd_stream/parallel.py). 1 = no MPI; "
        "more needs mpi4py and an mpiexec (pip install mpi4py mpich). `cpus` is per rank.",
    )

    @model_validator(mode="after")
    def _ranks_need_mpi4py(self) -> AgentResources:
        if self.ranks > 1 and importlib.util.find_spec("mpi4py") is None:
            raise ValueError(
                f"ranks: {self.ranks} needs mpi4py, which this Python cannot import "
                "(pip install mpi4py mpich), or set ranks: 1"
            )
        return self


class ResourcesConfig(Section):
    """The machine and pilot, and what each role's tasks ask for."""

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
    agent: AgentResources = Field(default_factory=AgentResources, description="The agent.")
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
    """A whole run: one section per role plus run-wide, stream and resource settings."""

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

    @property
    def ranking(self) -> str:
        """The steering objective: `agent.ranking`, auto resolved (rmsd with a reference_pdb,
        else score)."""
        if self.agent.ranking != "auto":
            return self.agent.ranking
        return "rmsd" if self.simulation.reference_pdb is not None else "score"

    @model_validator(mode="after")
    def _each_aggregator_has_a_simulation(self) -> RunConfig:
        aggregators = self.aggregation.num_aggregators
        simulations = self.simulation.num_simulations
        if aggregators > simulations:
            raise ValueError(
                f"aggregation.num_aggregators: {aggregators} is more than "
                f"simulation.num_simulations ({simulations}); each aggregator needs a simulation"
            )
        return self

    @model_validator(mode="after")
    def _implicit_solvent_has_its_xml(self) -> RunConfig:
        forcefield = self.simulation.forcefield
        if self.simulation.solvent == "implicit" and not any(
            marker in entry for entry in forcefield for marker in IMPLICIT_SOLVENT_MARKERS
        ):
            raise ValueError(
                f"simulation.forcefield: {forcefield} has no implicit-solvent XML "
                "but simulation.solvent is implicit (add e.g. amber99_obc.xml, or set "
                "simulation.solvent: vacuum)"
            )
        return self
