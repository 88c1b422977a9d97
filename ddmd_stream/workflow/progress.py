"""Live view and stop conditions: task heartbeats merged into RUN/status.json during a run."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ddmd_stream.atomic import atomic_write
from ddmd_stream.config import RunConfig
from ddmd_stream.rundir import RunDir

logger = logging.getLogger(__name__)


def read_task_status(run: RunDir) -> dict[str, dict[str, Any]]:
    statuses = {}
    for path in sorted(run.tasks_dir.glob("*/status.json")):
        try:
            statuses[path.parent.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return statuses


@dataclass
class Summary:
    """What the live view shows, derived from the task heartbeats."""

    elapsed_s: float
    remaining_s: float
    sims_running: int
    sims_total: int
    ns_simulated: float
    frames_aggregated: int
    model_version: int | None
    best_val_loss: float | None
    catalog_version: int | None
    outliers: int | None
    min_rmsd: float | None
    restarts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(
    run: RunDir,
    config: RunConfig,
    started: float,
    deadline: float,
    statuses: dict[str, dict[str, Any]],
) -> Summary:
    now = time.time()
    fresh = 3 * config.workflow.heartbeat_s + 5

    def of(role: str) -> list[dict[str, Any]]:
        return [s for name, s in statuses.items() if name.startswith(role + "-")]

    sims, aggs, trainer, agent = of("sim"), of("aggregator"), of("trainer"), of("agent")
    rmsds = [
        s["min_rmsd"]
        for s in sims + agent
        if isinstance(s.get("min_rmsd"), int | float) and s["min_rmsd"] != float("inf")
    ]
    return Summary(
        elapsed_s=now - started,
        remaining_s=max(0.0, deadline - now),
        sims_running=sum(now - s.get("time", 0) < fresh for s in sims),
        sims_total=config.simulation.num_simulations,
        ns_simulated=sum(s.get("ns", 0.0) for s in sims),
        frames_aggregated=sum(s.get("frames", 0) for s in aggs),
        model_version=_first(trainer, "model_version"),
        best_val_loss=_first(trainer, "best_val_loss"),
        catalog_version=_first(agent, "catalog_version"),
        outliers=_first(agent, "outliers"),
        min_rmsd=min(rmsds) if rmsds else None,
    )


def _first(statuses: list[dict[str, Any]], key: str) -> Any:
    return next((s[key] for s in statuses if s.get(key) is not None), None)


def stop_reason(summary: Summary, config: RunConfig) -> str | None:
    """A configured target that is reached, or None."""
    wf = config.workflow
    if (
        wf.stop_min_rmsd_angstrom is not None
        and summary.min_rmsd is not None
        and summary.min_rmsd <= wf.stop_min_rmsd_angstrom
    ):
        target = wf.stop_min_rmsd_angstrom
        return f"minimum RMSD {summary.min_rmsd:.2f} Å reached the target {target} Å"
    if wf.stop_total_ns is not None and summary.ns_simulated >= wf.stop_total_ns:
        return f"simulated {summary.ns_simulated:.3f} ns in total (target {wf.stop_total_ns})"
    if wf.stop_catalog_outliers is not None and (summary.outliers or 0) >= wf.stop_catalog_outliers:
        return f"catalog holds {summary.outliers} outliers (target {wf.stop_catalog_outliers})"
    return None


def request_stop(run: RunDir, reason: str) -> None:
    """Ask every task to stop (they check for the STOP file)."""
    if not run.stop_file.exists():
        logger.info("stopping: %s", reason)
        run.stop_file.write_text(reason + "\n")


def write_status(run: RunDir, summary: Summary, statuses: dict[str, dict[str, Any]]) -> None:
    """Replace RUN/status.json (atomically; not fsynced: rewritten every tick)."""
    atomic_write(
        run.status_file,
        json.dumps({"summary": summary.as_dict(), "tasks": statuses}, indent=1, default=str),
        durable=False,
    )


def render(summary: Summary) -> Any:
    """A rich table of the summary."""
    from rich.table import Table

    table = Table(title="ddmd_stream", show_header=False, expand=False)
    rows = [
        ("elapsed / remaining", f"{summary.elapsed_s:6.0f} s / {summary.remaining_s:6.0f} s"),
        ("simulations running", f"{summary.sims_running} / {summary.sims_total}"),
        ("ns simulated", f"{summary.ns_simulated:.3f}"),
        ("frames aggregated", str(summary.frames_aggregated)),
        (
            "model version (best val loss)",
            f"{summary.model_version} ({_fmt(summary.best_val_loss)})",
        ),
        ("catalog version (outliers)", f"{summary.catalog_version} ({summary.outliers})"),
        ("minimum RMSD so far (Å)", _fmt(summary.min_rmsd)),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def log_line(summary: Summary) -> str:
    return (
        f"t={summary.elapsed_s:.0f}s sims={summary.sims_running}/{summary.sims_total} "
        f"ns={summary.ns_simulated:.3f} frames={summary.frames_aggregated} "
        f"model=v{summary.model_version} catalog=v{summary.catalog_version} "
        f"outliers={summary.outliers} min_rmsd={_fmt(summary.min_rmsd)}"
    )


class Monitor(threading.Thread):
    """Background thread: status.json, live view, stop conditions, deadline backstop."""

    def __init__(
        self,
        run: RunDir,
        config: RunConfig,
        started: float,
        deadline: float,
        interval_s: float = 2.0,
        live: bool | None = None,
    ):
        super().__init__(name="ddmd-monitor", daemon=True)
        self.run_dir, self.config = run, config
        self.started, self.deadline, self.interval_s = started, deadline, interval_s
        self.live = sys.stdout.isatty() if live is None else live
        self.done = threading.Event()
        self.summary: Summary | None = None
        self._last_log = 0.0

    def tick(self) -> Summary:
        statuses = read_task_status(self.run_dir)
        self.summary = summarize(self.run_dir, self.config, self.started, self.deadline, statuses)
        write_status(self.run_dir, self.summary, statuses)
        reason = stop_reason(self.summary, self.config)
        if reason:
            request_stop(self.run_dir, reason)
        elif time.time() > self.deadline:
            request_stop(self.run_dir, "wall time reached")
        return self.summary

    def run(self) -> None:
        if self.live:
            self._run_live()
            return
        while not self.done.wait(self.interval_s):
            summary = self.tick()
            if time.monotonic() - self._last_log > 15:
                logger.info("%s", log_line(summary))
                self._last_log = time.monotonic()

    def _run_live(self) -> None:
        from rich.live import Live

        with Live(render(self.tick()), refresh_per_second=1, transient=False) as live:
            while not self.done.wait(self.interval_s):
                live.update(render(self.tick()))

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=10)
        self.tick()
