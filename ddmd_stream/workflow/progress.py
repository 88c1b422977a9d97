"""Live view and stop conditions: task heartbeats merged into RUN/status.json during a run."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ddmd_stream.atomic import atomic_write
from ddmd_stream.config import RunConfig
from ddmd_stream.rundir import RunDir

logger = logging.getLogger(__name__)


def read_task_status(run: RunDir) -> dict[str, dict[str, Any]]:
    statuses = {}
    for path in sorted(run.tasks_dir.glob("*/status.json")):
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(status, dict):
            statuses[path.parent.name] = status
    return statuses


def read_run_status(run: RunDir) -> Summary | None:
    """The summary the launcher last wrote to RUN/status.json (None: none readable yet)."""
    try:
        summary = json.loads(run.status_file.read_text())["summary"]
        return Summary(**summary)
    except (OSError, ValueError, KeyError, TypeError):
        return None


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
    restarts: dict[str, int] = field(default_factory=dict)  # per simulation, from outliers
    starts: dict[str, int] = field(default_factory=dict)  # task_start events per task
    ended: dict[str, int] = field(default_factory=dict)  # exit code of tasks now ended
    fresh_s: float = 20.0  # a heartbeat younger than this says its task is running

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def empty(cls) -> Summary:
        """Nothing known yet (no RUN/status.json)."""
        return cls(0.0, 0.0, 0, 0, 0.0, 0, None, None, None, None, None)

    def with_lives(self, lives: TaskLives) -> Summary:
        """This summary with the starts, restarts and exits of `lives`."""
        return replace(self, restarts=dict(lives.restarts), starts=dict(lives.starts),
                       ended=dict(lives.ended))


@dataclass
class TaskLives:
    """What the Monitor keeps of the tasks' events (read incrementally): starts, restarts from
    outliers, and the exit code of each task whose last life ended."""

    starts: dict[str, int] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    ended: dict[str, int] = field(default_factory=dict)

    def add(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            task, name = event.get("task", "?"), event["event"]
            if name == "task_start":
                self.starts[task] = self.starts.get(task, 0) + 1
                self.ended.pop(task, None)
            elif name == "restart":
                self.restarts[task] = self.restarts.get(task, 0) + 1
            elif name == "task_end":
                self.ended[task] = event.get("code", 0)


def summarize(
    run: RunDir,
    config: RunConfig,
    started: float,
    deadline: float,
    statuses: dict[str, dict[str, Any]],
    lives: TaskLives | None = None,
) -> Summary:
    now = time.time()
    fresh = fresh_s(config)
    lives = lives or TaskLives()

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
        sims_running=sum(now - s.get("time", 0) < fresh and s.get("task") not in lives.ended
                         for s in sims),
        sims_total=config.simulation.num_simulations,
        ns_simulated=sum(s.get("ns", 0.0) for s in sims),
        frames_aggregated=sum(s.get("frames", 0) for s in aggs),
        model_version=_first(trainer, "model_version"),
        best_val_loss=_first(trainer, "best_val_loss"),
        catalog_version=_first(agent, "catalog_version"),
        outliers=_first(agent, "outliers"),
        min_rmsd=min(rmsds) if rmsds else None,
        fresh_s=fresh,
    ).with_lives(lives)


def fresh_s(config: RunConfig) -> float:
    """A heartbeat younger than this says its task is running."""
    return 3 * config.workflow.heartbeat_s + 5


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


def summary_rows(summary: Summary) -> list[tuple[str, str]]:
    """(quantity, value) lines of the summary: the terminal view, `status` and the live page."""
    restarts, starts = sum(summary.restarts.values()), sum(summary.starts.values())
    return [
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
        ("restarts from outliers / task starts", f"{restarts} / {starts}"),
    ]


# starts: task_start events (over 1: started again by the engine, or sequential stages)
TASK_COLUMNS = ("task", "state", "last heartbeat", "starts", "restarts", "progress")
QUIET_KEYS = {"task", "pid", "time", "structure"}  # shown elsewhere, or too long for a cell


def task_rows(
    statuses: dict[str, dict[str, Any]], summary: Summary | None, now: float
) -> list[tuple[str, ...]]:
    """One line per task (`TASK_COLUMNS`): running, silent or ended; starts; its numbers."""
    summary = summary or Summary.empty()
    names = sorted({*statuses, *summary.starts}, key=_task_order)
    rows = []
    for name in names:
        status = statuses.get(name, {})
        beat = now - status["time"] if isinstance(status.get("time"), int | float) else None
        rows.append((
            name,
            _task_state(name, beat, summary),
            "-" if beat is None else f"{beat:.0f} s ago",
            str(summary.starts.get(name, "-")),
            str(summary.restarts.get(name, 0)) if name.startswith("sim-") else "-",
            ", ".join(f"{k} {_cell(v)}" for k, v in status.items() if k not in QUIET_KEYS),
        ))
    return rows


def _task_state(name: str, beat: float | None, summary: Summary) -> str:
    if name in summary.ended:
        code = summary.ended[name]
        return "done" if code == 0 else f"ended (exit {code})"
    if beat is None:
        return "starting"
    return "running" if beat < summary.fresh_s else "silent"


def _task_order(name: str) -> tuple[int, str]:
    from ddmd_stream.rundir import ROLES

    role = name.rsplit("-", 1)[0]
    return (ROLES.index(role) if role in ROLES else len(ROLES), name)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if value != value or value in (float("inf"), -float("inf")) else f"{value:.4g}"
    return str(value)


def render(summary: Summary) -> Any:
    """A rich table of the summary."""
    from rich.table import Table

    table = Table(title="ddmd_stream", show_header=False, expand=False)
    for key, value in summary_rows(summary):
        table.add_row(key, value)
    return table


def render_tasks(statuses: dict[str, dict[str, Any]], summary: Summary | None,
                 now: float) -> Any:
    """A rich table of `task_rows`."""
    from rich.table import Table

    table = Table(title="tasks", expand=False)
    for column in TASK_COLUMNS:  # only the last column wraps: names and states stay whole
        table.add_column(column, no_wrap=column != TASK_COLUMNS[-1], overflow="fold")
    for row in task_rows(statuses, summary, now):
        table.add_row(*row)
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
    """Background thread: status.json, live view, live page, stop conditions, deadline backstop.

    A failing tick (a status write, a bad heartbeat, a bug) is logged, never fatal: the thread
    keeps ticking. The live page is drawn by a child process (`report.live.LivePageProcess`),
    which the Monitor starts, watches and, at the end, asks for its final page.
    """

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
        self.lives = TaskLives()
        self.ticks = 0  # completed ticks
        self.failures = 0  # ticks or status writes that failed
        self._events: Any = None  # report.tail.EventTail, made on the first tick
        self._last_log = 0.0
        self._last_failure = ""
        self.page = _live_page(run, config)

    def tick(self) -> Summary:
        statuses = read_task_status(self.run_dir)
        self.lives.add(self._new_events())
        self.summary = summarize(self.run_dir, self.config, self.started, self.deadline,
                                 statuses, self.lives)
        self._write_status(self.summary, statuses)
        reason = stop_reason(self.summary, self.config)
        if reason:
            request_stop(self.run_dir, reason)
        elif time.time() > self.deadline:
            request_stop(self.run_dir, "wall time reached")
        if self.page is not None and not self.done.is_set():
            self.page.keep_running()
        self.ticks += 1
        return self.summary

    def safe_tick(self) -> Summary | None:
        """`tick`, with any error logged (once while it repeats) instead of raised."""
        try:
            return self.tick()
        except Exception as error:
            self._failed("monitor tick failed", error)
            return None

    def _new_events(self) -> list[dict[str, Any]]:
        if self._events is None:
            from ddmd_stream.report.tail import EventTail

            self._events = EventTail(self.run_dir)
        return self._events.read_new()

    def _write_status(self, summary: Summary, statuses: dict[str, dict[str, Any]]) -> None:
        try:
            write_status(self.run_dir, summary, statuses)
        except OSError as error:
            self._failed(f"cannot write {self.run_dir.status_file}", error)

    def _failed(self, what: str, error: Exception) -> None:
        self.failures += 1
        kind = f"{what}: {type(error).__name__}"
        if kind != self._last_failure:  # a fault that repeats every tick is logged once
            logger.warning("%s: %s (the monitor keeps going)", kind, error,
                           exc_info=not isinstance(error, OSError))
            self._last_failure = kind

    def run(self) -> None:
        if self.live:
            self._run_live()
            return
        while not self.done.wait(self.interval_s):
            summary = self.safe_tick()
            if summary is not None and time.monotonic() - self._last_log > 15:
                logger.info("%s", log_line(summary))
                self._last_log = time.monotonic()

    def _run_live(self) -> None:
        from rich.live import Live

        with Live(refresh_per_second=1, transient=False) as live:
            while True:
                summary = self.safe_tick()
                if summary is not None:
                    live.update(render(summary))
                if self.done.wait(self.interval_s):
                    return

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=10)
        self.safe_tick()
        if self.page is not None:
            self.page.finish()


def _live_page(run: RunDir, config: RunConfig) -> Any:
    """The updater of RUN/report/index.html, or None when `workflow.live_page_s` is none."""
    if config.workflow.live_page_s is None:
        return None
    from ddmd_stream.report.live import LivePageProcess

    return LivePageProcess(run, config.workflow.live_page_s)
