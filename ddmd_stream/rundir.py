"""Layout of a run directory: every path a task reads or writes comes from here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROLES = ("sim", "aggregator", "trainer", "agent")
MARKER_NAME = ".ddmd_stream-run"  # marks a folder as a run directory ddmd_stream made


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory (and node-local scratch, when configured)."""

    root: Path
    scratch: Path | None = None

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def adios_xml(self) -> Path:
        return self.root / "adios.xml"

    @property
    def stop_file(self) -> Path:
        return self.root / "STOP"

    @property
    def status_file(self) -> Path:
        return self.root / "status.json"

    @property
    def tasks_dir(self) -> Path:
        return self.root / "tasks"

    def task_dir(self, role: str, index: int) -> Path:
        return self.tasks_dir / f"{role}-{index:04d}"

    def task_file(self, role: str, index: int) -> Path:
        return self.task_dir(role, index) / "task.yaml"

    @property
    def stream_dir(self) -> Path:
        return self.root / "stream"

    @property
    def sst_dir(self) -> Path:
        """Where SST contact files live (node-local scratch when set)."""
        return (self.scratch / "sst") if self.scratch else self.stream_dir

    def sim_stream(self, sim_id: int) -> Path:
        """ADIOS name of a simulation's output stream (SST writes `<name>.sst` beside it)."""
        return self.sst_dir / f"sim-{sim_id:04d}"

    def aggregator_store(self, agg_id: int) -> Path:
        return self.stream_dir / f"agg-{agg_id:04d}.bp"

    def sim_store(self, sim_id: int) -> Path:
        """Sequential mode: the BP store a simulation appends its segments to (no aggregator).

        Named `agg-sim-*.bp` so that readers of the aggregated stores (`agg-*.bp`) find it."""
        return self.stream_dir / f"agg-sim-{sim_id:04d}.bp"

    def aggregator_stores(self) -> list[Path]:
        """Every store of frames: the aggregators' and, in sequential mode, the simulations'."""
        return sorted(self.stream_dir.glob("agg-*.bp"))

    def sim_checkpoint(self, sim_id: int) -> Path:
        """A simulation's last checkpoint (positions, velocities, box, step, segment)."""
        return self.task_dir("sim", sim_id) / "state.npz"

    def sim_ledger(self, sim_id: int) -> Path:
        """Identities of every frame a simulation streamed (`accounting.FrameLedger`)."""
        return self.task_dir("sim", sim_id) / "frames.ledger"

    @property
    def jobs_file(self) -> Path:
        """One JSON line per launch into this run directory (the jobs of a campaign)."""
        return self.root / "jobs.jsonl"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def catalog_dir(self) -> Path:
        return self.root / "catalog"

    @property
    def catalog_file(self) -> Path:
        return self.catalog_dir / "outliers.pkl"

    @property
    def mps_dir(self) -> Path:
        """NVIDIA MPS daemons' folders (`pipe`, `log`), per node on clusters."""
        return self.root / "mps"

    def mps_pipe_dir(self, node: str = "") -> Path:
        """CUDA_MPS_PIPE_DIRECTORY (`node`: a host name or a shell word like `$(hostname)`)."""
        return self.mps_dir / node / "pipe" if node else self.mps_dir / "pipe"

    def mps_log_dir(self, node: str = "") -> Path:
        """CUDA_MPS_LOG_DIRECTORY, beside the pipe directory."""
        return self.mps_dir / node / "log" if node else self.mps_dir / "log"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def marker_file(self) -> Path:
        """Written by `create`: only a folder holding it may be overwritten."""
        return self.root / MARKER_NAME

    def create(self) -> None:
        for path in (
            self.tasks_dir,
            self.stream_dir,
            self.sst_dir,
            self.model_dir,
            self.catalog_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)
        self.marker_file.write_text("a ddmd_stream run directory (workflow.on_existing: "
                                    "overwrite may delete it whole)\n")
