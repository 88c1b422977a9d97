"""The run report: merge every task's events, tabulate per-component costs, draw the figures.

`build_report(run_dir, out_dir)` writes, into `out_dir`:

- `timeline.png`: a lane per task, colour per component; restarts and publishes marked
- `table.md`, `table.csv`: per component, like Table 2 of the DeepDriveMD-S paper
- `io.md`: ADIOS I/O time shares, frames and bytes streamed
- `rmsd_windows.png`, `min_rmsd.png`, `agent_cycles.png`, `training_loss.png`
- `summary.json` (every number above), `report.md` and `index.html` tying it together

It works on a run that is still going: torn last lines, missing stores, missing config.
Times: events carry `time.time()` stamps; a span's `t` is its start and `dur` its length (s).
"""

from __future__ import annotations

import csv
import html
import json
import logging
import math
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ddmd_stream.errors import InputError
from ddmd_stream.profile.events import EventRecorder, read_run_events
from ddmd_stream.rundir import ROLES, RunDir

logger = logging.getLogger(__name__)

Event = dict[str, Any]

COMPONENTS = {"sim": "Simulation", "aggregator": "Aggregator", "trainer": "Training",
              "agent": "Agent"}
COLOURS = {"sim": "tab:blue", "aggregator": "tab:orange", "trainer": "tab:green",
           "agent": "tab:purple"}
# the event that is one iteration of each role, and the field holding its samples
ITERATION = {"sim": ("segment", None), "aggregator": ("write", "frames"),
             "trainer": ("train_round", "samples"), "agent": ("cycle", "frames")}
# events whose duration is ADIOS I/O time: (role, event, field holding seconds)
ADIOS_TIMES = (("sim", "segment", "put_s"), ("aggregator", "read", "dur"),
               ("aggregator", "write", "dur"), ("trainer", "read", "dur"),
               ("agent", "read", "dur"))
FIGURES = {
    "timeline.png": "Task timeline",
    "rmsd_windows.png": "RMSD to the folded structure per time window",
    "min_rmsd.png": "Minimum RMSD over time",
    "agent_cycles.png": "Outliers and DBSCAN eps per agent cycle",
    "training_loss.png": "Training and validation loss per round",
}
RMSD_WINDOWS = 6


class ReportError(InputError):
    """The report cannot be made from this folder."""


# --------------------------------------------------------------------------- loading


@dataclass
class RunData:
    """Everything the report reads from one run directory."""

    run: RunDir
    events: list[Event]
    config: Any = None  # RunConfig, or None when config.yaml is missing or broken
    frames: dict[str, np.ndarray] = field(default_factory=dict)  # rmsd, sim_id, wall (time.time)
    notes: list[str] = field(default_factory=list)

    @cached_property
    def by_task(self) -> dict[str, list[Event]]:
        tasks: dict[str, list[Event]] = defaultdict(list)
        for event in self.events:
            tasks[event.get("task", "?")].append(event)
        return dict(sorted(tasks.items(), key=lambda item: task_sort_key(item[0])))

    @property
    def t0(self) -> float:
        return min((e["t"] for e in self.events), default=0.0)


def check_run_dir(path: Path) -> RunDir:
    """The run directory at `path`, or a one-line ReportError."""
    run = RunDir(Path(path))
    if not run.root.is_dir():
        raise ReportError(f"{path}: no such directory (give a run directory made by the launcher)")
    if not run.config_file.is_file() and not run.tasks_dir.is_dir():
        raise ReportError(f"{path}: not a run directory (no config.yaml or tasks/ inside)")
    return run


def load_run(path: Path) -> RunData:
    """Events (torn lines skipped), config and stored frames of a finished or running run."""
    run = check_run_dir(path)
    data = RunData(run, [e for e in read_run_events(run.root) if _valid_event(e)])
    data.config = _load_config(run, data.notes)
    data.frames = load_frames(run, data.by_task, data.notes)
    if not data.events:
        data.notes.append("no events recorded yet")
    return data


def _valid_event(event: Any) -> bool:
    return isinstance(event, dict) and isinstance(event.get("t"), int | float) and "event" in event


def _load_config(run: RunDir, notes: list[str]) -> Any:
    from ddmd_stream.config import load_config

    if not run.config_file.is_file():
        notes.append("config.yaml missing: CPU;GPU and frames per segment unknown")
        return None
    try:
        return load_config(run.config_file)
    except InputError as error:
        notes.append(f"config.yaml unreadable ({error}); CPU;GPU unknown")
        return None


def load_frames(run: RunDir, by_task: dict[str, list[Event]], notes: list[str]
                ) -> dict[str, np.ndarray]:
    """rmsd and sim_id of every stored frame, with its wall time of arrival when known."""
    parts = [_store_frames(path, by_task, notes) for path in run.aggregator_stores()]
    parts = [p for p in parts if p]
    if not parts:
        notes.append("no aggregated frames readable yet: RMSD plots are empty")
        return {}
    if not all("wall" in p for p in parts):
        notes.append("aggregator write events missing: RMSD plots use frame order, not time")
        parts = [{k: v for k, v in p.items() if k != "wall"} for p in parts]
    merged = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    if "wall" not in merged:
        return merged
    order = np.argsort(merged["wall"], kind="stable")
    return {name: values[order] for name, values in merged.items()}


def _store_frames(path: Path, by_task: dict[str, list[Event]], notes: list[str]
                  ) -> dict[str, np.ndarray]:
    from ddmd_stream.streams import read_store

    try:
        batch = read_store(path, ["rmsd", "sim_id"])
    except (InputError, RuntimeError, ValueError, OSError) as error:
        notes.append(f"{path.name}: not readable ({str(error).splitlines()[0]})")
        return {}
    if not batch:
        return {}
    frames = {"rmsd": batch["rmsd"].astype(float), "sim_id": batch["sim_id"]}
    writes = spans(by_task.get(store_writer(path), []), "write")
    if writes:
        frames["wall"] = frame_wall_times(len(frames["rmsd"]), writes)
    return frames


def store_writer(path: Path) -> str:
    """The task that writes a store: agg-0001.bp → aggregator-0001, agg-sim-0003.bp → sim-0003
    (sequential mode, where each simulation writes its own store)."""
    parts = path.stem.split("-")
    return f"{'sim' if parts[1:2] == ['sim'] else 'aggregator'}-{parts[-1]}"


def frame_wall_times(count: int, writes: list[Event]) -> np.ndarray:
    """Wall time at which each stored frame was written, from the aggregator's write spans.

    Frames after the last recorded write (its events not flushed yet) get that write's time.
    """
    ends = np.cumsum([w.get("frames", 0) for w in writes])
    stamps = np.array([end_of(w) for w in writes])
    index = np.searchsorted(ends, np.arange(count), side="right")
    return stamps[np.minimum(index, len(stamps) - 1)]


def frame_axis(data: RunData) -> tuple[np.ndarray, str, float]:
    """x values of the stored frames: time since run start, or arrival order without times."""
    wall = data.frames.get("wall")
    if wall is None:
        return np.arange(len(data.frames["rmsd"]), dtype=float), "frames in arrival order", 1.0
    scale, label = time_axis(float(wall[-1]) - data.t0)
    return (wall - data.t0) / scale, label, scale


# --------------------------------------------------------------------------- event helpers


def task_sort_key(task: str) -> tuple[int, str]:
    role = role_of(task)
    return (ROLES.index(role) if role in ROLES else len(ROLES), task)


def role_of(task: str) -> str:
    return task.rsplit("-", 1)[0]


def spans(events: Iterable[Event], name: str) -> list[Event]:
    return [e for e in events if e.get("event") == name]


def end_of(event: Event) -> float:
    return event["t"] + float(event.get("dur") or 0.0)


def task_intervals(events: list[Event]) -> list[tuple[float, float]]:
    """(start, end) of each life of one task: task_start to task_end, or to its last event.

    A task restarted by the engine appends to the same file, so one file may hold several lives.
    """
    lives: list[list[float]] = []
    for event in sorted(events, key=lambda e: e["t"]):
        if event["event"] == "task_start" or not lives:
            lives.append([event["t"], end_of(event), 0.0])
        elif lives[-1][2] == 0.0:
            lives[-1][1] = max(lives[-1][1], end_of(event))
            lives[-1][2] = 1.0 if event["event"] == "task_end" else 0.0
    return [(start, end) for start, end, _ in lives]


def task_seconds(events: list[Event]) -> float:
    return sum(end - start for start, end in task_intervals(events))


def role_events(data: RunData, role: str) -> dict[str, list[Event]]:
    return {task: events for task, events in data.by_task.items() if role_of(task) == role}


def role_spans(data: RunData, role: str, name: str) -> list[Event]:
    """The events called `name` of all tasks of `role`, task by task."""
    return [e for events in role_events(data, role).values() for e in spans(events, name)]


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


def _mean(values: Iterable[Any]) -> float | None:
    finite = _finite(values)
    return sum(finite) / len(finite) if finite else None


# --------------------------------------------------------------------------- tables


@dataclass
class ComponentRow:
    """One line of the Table-2-like summary (per component, over all its tasks)."""

    component: str
    tasks: int
    iterations: int
    mean_s: float | None  # mean duration of one iteration
    per_hour: float | None  # iterations per hour of one task's life
    busy: float | None  # share of the tasks' lives spent in iterations
    cpu_gpu: str
    samples: float | None  # mean samples per iteration
    outliers: float | None  # mean outliers per iteration (agent)


def component_table(data: RunData) -> list[ComponentRow]:
    return [component_row(data, role) for role in ROLES if role_events(data, role)]


def component_row(data: RunData, role: str) -> ComponentRow:
    tasks = role_events(data, role)
    name, samples_field = ITERATION[role]
    iterations = [e for events in tasks.values() for e in spans(events, name)]
    lived = sum(task_seconds(events) for events in tasks.values())
    busy = sum(float(e.get("dur") or 0.0) for e in iterations)
    return ComponentRow(
        component=COMPONENTS.get(role, role), tasks=len(tasks), iterations=len(iterations),
        mean_s=_mean(e.get("dur") for e in iterations),
        per_hour=len(iterations) / (lived / 3600) if lived > 0 else None,
        busy=busy / lived if lived > 0 else None,
        cpu_gpu=cpu_gpu(data.config, role),
        samples=_mean(_samples(e, samples_field, data.config) for e in iterations),
        outliers=_mean(e.get("outliers") for e in iterations) if role == "agent" else None)


def _samples(event: Event, name: str | None, config: Any) -> float | None:
    """Samples of one iteration; a segment's are its frames (steps / steps per report)."""
    if name is not None:
        return event.get(name)
    if config is None or "steps" not in event:
        return None
    return event["steps"] / config.simulation.steps_per_report


def cpu_gpu(config: Any, role: str) -> str:
    if config is None:
        return "n/a"
    settings = getattr(config.resources, role, None)
    return f"{settings.cpus};{settings.gpus}" if settings is not None else "n/a"


TABLE_COLUMNS = ("component", "tasks", "iterations", "mean duration per iteration (s)",
                 "iterations/hour per task", "busy (%)", "CPU;GPU per task",
                 "samples per iteration", "outliers per iteration")


def table_cells(row: ComponentRow) -> list[str]:
    mean = "-" if row.mean_s is None else f"{row.mean_s:.3g}"
    return [row.component, str(row.tasks), str(row.iterations), mean,
            _fmt(row.per_hour, 1), _fmt(None if row.busy is None else 100 * row.busy, 1),
            row.cpu_gpu, _fmt(row.samples, 1), _fmt(row.outliers, 1)]


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: list[ComponentRow], out: Path) -> None:
    (out / "table.md").write_text(markdown_table(TABLE_COLUMNS, map(table_cells, rows)))
    with open(out / "table.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow([f.name for f in ComponentRow.__dataclass_fields__.values()])
        writer.writerows([("" if v is None else v) for v in asdict(r).values()] for r in rows)


# --------------------------------------------------------------------------- I/O summary


def adios_seconds(data: RunData) -> dict[str, float]:
    """ADIOS time per role: simulation puts, aggregator reads and writes, store reads."""
    seconds: dict[str, float] = defaultdict(float)
    for role, name, key in ADIOS_TIMES:
        for events in role_events(data, role).values():
            seconds[role] += sum(_finite(e.get(key) for e in spans(events, name)))
    return dict(seconds)


def io_summary(data: RunData) -> dict[str, Any]:
    """ADIOS I/O shares and the volume streamed (numbers for io.md and summary.json)."""
    adios = adios_seconds(data)
    total = sum(task_seconds(events) for events in data.by_task.values())
    sims = role_events(data, "sim")
    segments = [e for events in sims.values() for e in spans(events, "segment")]
    segment_s = sum(_finite(e.get("dur") for e in segments))
    put_s = adios.get("sim", 0.0)
    return {
        "task_s": total, "adios_s": sum(adios.values()), "adios_s_by_role": adios,
        "io_share_all": sum(adios.values()) / total if total > 0 else None,
        "sim_task_s": sum(task_seconds(events) for events in sims.values()),
        "sim_segment_s": segment_s, "sim_put_s": put_s,
        "io_share_sim": put_s / segment_s if segment_s > 0 else None,
        "reporter_share_sim": (sum(_finite(e.get("reporter_s") for e in segments)) / segment_s
                               if segment_s > 0 else None),
        "segments": len(segments), "restarts": sum(len(spans(ev, "restart")) for ev in
                                                   sims.values()),
        "ns_simulated": sum(_finite(e.get("ns") for e in segments)),
        **streamed_volume(data, sims),
    }


def streamed_volume(data: RunData, sims: dict[str, list[Event]]) -> dict[str, Any]:
    """Frames and bytes the simulations streamed (not wrote) and the aggregators stored."""
    frames: int | None = 0
    bytes_: int | None = 0
    for events in sims.values():
        closed = spans(events, "stream_closed")
        if closed:
            frames = _add(frames, sum(e.get("frames", 0) for e in closed))
            bytes_ = _add(bytes_, sum(e.get("bytes", 0) for e in closed))
        else:  # still running: frames from the segments (when the config says how many)
            bytes_ = None
            counts = [_samples(e, None, data.config) for e in spans(events, "segment")]
            frames = None if None in counts else _add(frames, int(sum(counts)))
    writes = role_spans(data, "aggregator", "write")
    sim_stores = [p for p in data.run.aggregator_stores() if role_of(store_writer(p)) == "sim"]
    return {"sim_frames_streamed": frames, "sim_bytes_streamed": bytes_,
            "sim_bytes_written_to_disk": sum(_folder_bytes(p) for p in sim_stores),
            "aggregated_frames": sum(e.get("frames", 0) for e in writes),
            "store_bytes_on_disk": sum(_folder_bytes(p) for p in data.run.aggregator_stores())}


def _add(total: int | None, value: int) -> int | None:
    return None if total is None else total + value


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def io_markdown(io: dict[str, Any], overhead: dict[str, Any]) -> str:
    rows = [
        ("ADIOS I/O time, all tasks", f"{io['adios_s']:.2f} s of {io['task_s']:.1f} s task time"
         f" = {_pct(io['io_share_all'])}"),
        ("ADIOS put time, simulations", f"{io['sim_put_s']:.2f} s of {io['sim_segment_s']:.1f} s"
         f" in segments = {_pct(io['io_share_sim'])}"),
        ("frame preparation (reporter), simulations", _pct(io["reporter_share_sim"])),
        ("segments run / restarts", f"{io['segments']} / {io['restarts']}"),
        ("simulated", f"{io['ns_simulated']:.4g} ns"),
        ("frames streamed by simulations", _count(io["sim_frames_streamed"])),
        ("bytes streamed by simulations", _bytes(io["sim_bytes_streamed"])),
        ("bytes written to disk by simulations", _bytes(io["sim_bytes_written_to_disk"])
         if io["sim_bytes_written_to_disk"] else "0 (all frames streamed)"),
        ("frames aggregated into stores", f"{io['aggregated_frames']}"),
        ("store size on disk", _bytes(io["store_bytes_on_disk"])),
        ("event recorder overhead (estimate)", f"{overhead['us_per_event']:.2f} µs/event ×"
         f" {overhead['events']} events = {_pct(overhead['share'], 4)} of task time"
         f" (busiest task {_pct(overhead['worst_task_share'], 4)})"),
    ]
    per_role = ", ".join(f"{COMPONENTS.get(r, r)} {s:.2f} s" for r, s in
                         io["adios_s_by_role"].items())
    rows.insert(1, ("ADIOS I/O time by component", per_role or "-"))
    return markdown_table(("quantity", "value"), rows)


def _pct(share: float | None, digits: int = 2) -> str:
    return "-" if share is None else f"{100 * share:.{digits}f} %"


def _count(count: int | None) -> str:
    return "- (needs config.yaml while the simulations run)" if count is None else str(count)


def _bytes(count: int | None) -> str:
    if count is None:
        return "- (known when the simulations end)"
    return f"{count / 1e6:.2f} MB ({count} B)"


# --------------------------------------------------------------------------- recorder overhead


def measure_event_cost(count: int = 100_000) -> float:
    """Microseconds per `EventRecorder.event` call (recording to a real file, flushing as usual)."""
    with tempfile.TemporaryDirectory(prefix="ddmd-events-") as folder:
        recorder = EventRecorder(Path(folder) / "events.jsonl", "bench-0000")
        started = time.perf_counter()
        for i in range(count):
            recorder.event("segment", segment=i, steps=1000, md_s=2.5, put_s=0.004, ns=0.002)
        recorder.close()
        return (time.perf_counter() - started) / count * 1e6


def recorder_overhead(data: RunData, us_per_event: float) -> dict[str, Any]:
    """Estimated recording time over task time: all tasks together and the busiest task."""
    lives = {task: task_seconds(events) for task, events in data.by_task.items()}
    total = sum(lives.values())
    shares = [len(data.by_task[task]) * us_per_event * 1e-6 / s for task, s in lives.items()
              if s > 0]
    return {"us_per_event": us_per_event, "events": len(data.events),
            "share": len(data.events) * us_per_event * 1e-6 / total if total > 0 else None,
            "worst_task_share": max(shares, default=None)}


# --------------------------------------------------------------------------- figures


def new_figure(width: float, height: float) -> Any:
    """A figure on the Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Any, path: Path) -> None:
    figure.savefig(path, dpi=110)
    logger.info("wrote %s", path)


def save_no_data(path: Path, text: str, width: float = 8, height: float = 4.5) -> None:
    """Save a placeholder figure that only says `text` (a plot with nothing to show yet)."""
    figure = new_figure(width, height)
    ax = figure.subplots()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])
    save_figure(figure, path)


def time_axis(span_s: float) -> tuple[float, str]:
    """Divisor and label for a time axis covering `span_s` seconds."""
    if span_s > 3 * 3600:
        return 3600.0, "time since run start (h)"
    if span_s > 1200:
        return 60.0, "time since run start (min)"
    return 1.0, "time since run start (s)"


def plot_timeline(data: RunData, path: Path) -> None:
    tasks = data.by_task
    if not tasks:
        return save_no_data(path, "no events yet", 11, 3.0)
    figure = new_figure(11, max(3.0, 0.45 * len(tasks) + 1.6))
    ax = figure.subplots()
    t0 = data.t0
    span = max(end_of(e) for e in data.events) - t0
    scale, label = time_axis(span)
    for lane, events in enumerate(tasks.values()):
        _draw_lane(ax, lane, events, t0, scale)
    ax.set_yticks(range(len(tasks)), list(tasks))
    ax.set_ylim(len(tasks) - 0.4, -0.6)
    ax.set_xlim(0, span / scale * 1.01 or 1)
    ax.set_xlabel(label)
    ax.set_title("Task timeline: light = task alive, solid = iterations "
                 "(segment, write, training round, agent cycle)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=_timeline_legend(tasks), loc="upper left", bbox_to_anchor=(1.01, 1),
              fontsize="small")
    save_figure(figure, path)


MARKS = {"restart": ("v", "black", "simulation restart from an outlier"),
         "publish_model": ("^", "darkgreen", "model published"),
         "publish_catalog": ("D", "crimson", "outlier catalog published")}


def _draw_lane(ax: Any, lane: int, events: list[Event], t0: float, scale: float) -> None:
    role = role_of(events[0]["task"])
    colour = COLOURS.get(role, "tab:gray")
    lives = [((s - t0) / scale, (e - s) / scale) for s, e in task_intervals(events)]
    ax.broken_barh(lives, (lane - 0.35, 0.7), color=colour, alpha=0.22)
    name = ITERATION.get(role, ("", None))[0]
    busy = [((e["t"] - t0) / scale, float(e.get("dur") or 0.0) / scale)
            for e in spans(events, name)]
    ax.broken_barh(busy, (lane - 0.25, 0.5), color=colour)
    for kind, (marker, mark_colour, _) in MARKS.items():
        times = [(end_of(e) - t0) / scale for e in spans(events, kind)]
        if times:
            ax.plot(times, [lane] * len(times), marker, color=mark_colour, markersize=5,
                    linestyle="none")


def _timeline_legend(tasks: dict[str, list[Event]]) -> list[Any]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    roles = {role_of(task) for task in tasks}
    handles: list[Any] = [Patch(color=COLOURS[r], label=COMPONENTS[r]) for r in ROLES
                          if r in roles]
    handles += [Line2D([], [], marker=m, color=c, linestyle="none", label=text)
                for m, c, text in MARKS.values()]
    return handles


def plot_rmsd_windows(data: RunData, path: Path, windows: int = RMSD_WINDOWS) -> None:
    """Histogram of RMSD to the folded structure for successive windows of arrival time."""
    if len(data.frames.get("rmsd", ())) == 0:
        return save_no_data(path, "no aggregated frames yet")
    figure = new_figure(8, 4.5)
    ax = figure.subplots()
    from matplotlib import colormaps

    rmsd = data.frames["rmsd"]
    x, label, _ = frame_axis(data)
    count = int(np.clip(2 * np.sqrt(len(rmsd) / windows), 8, 40))
    bins = np.linspace(float(rmsd.min()), float(rmsd.max()) + 1e-6, count + 1)
    edges = np.linspace(x[0], x[-1] + 1e-9, windows + 1)
    colours = colormaps["viridis"](np.linspace(0, 0.9, windows))
    for i in range(windows):
        chosen = rmsd[(x >= edges[i]) & (x < edges[i + 1])]
        if len(chosen):
            ax.hist(chosen, bins=bins, histtype="step", density=True, linewidth=1.6,
                    color=colours[i], label=f"{edges[i]:.0f}–{edges[i + 1]:.0f}"
                    f" ({len(chosen)} frames)")
    ax.set_xlabel("RMSD to the folded structure (Å)")
    ax.set_ylabel("density (1/Å)")
    ax.set_title("RMSD distribution of aggregated frames per time window")
    ax.legend(title=f"window: {label}", fontsize="small", title_fontsize="small")
    save_figure(figure, path)


def plot_min_rmsd(data: RunData, path: Path) -> None:
    """Running minimum RMSD over all frames (and per simulation) against arrival time."""
    if len(data.frames.get("rmsd", ())) == 0:
        return save_no_data(path, "no aggregated frames yet")
    figure = new_figure(8, 4.5)
    ax = figure.subplots()
    rmsd, sims = data.frames["rmsd"], data.frames["sim_id"]
    x, label, _ = frame_axis(data)
    ax.scatter(x, rmsd, s=4, color="0.6", alpha=0.5, label="each frame")
    for sim in np.unique(sims)[:12]:
        chosen = sims == sim
        ax.step(x[chosen], np.minimum.accumulate(rmsd[chosen]), where="post", linewidth=0.8,
                alpha=0.6, label=f"sim {sim}")
    ax.step(x, np.minimum.accumulate(rmsd), where="post", color="black", linewidth=2,
            label="all simulations")
    ax.set_xlabel(label)
    ax.set_ylabel("RMSD to the folded structure (Å)")
    ax.set_title("Minimum RMSD so far (lines) and RMSD of each aggregated frame (dots)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3)
    save_figure(figure, path)


def plot_agent_cycles(data: RunData, path: Path) -> None:
    cycles = role_spans(data, "agent", "cycle")
    if not cycles:
        return save_no_data(path, "no agent cycles yet")
    figure = new_figure(8, 4.5)
    ax = figure.subplots()
    numbers = [e.get("cycle", i + 1) for i, e in enumerate(cycles)]
    ax.bar(numbers, [e.get("outliers", 0) for e in cycles], color="tab:purple", alpha=0.7,
           label="outliers found")
    ax.set_xlabel("agent cycle")
    ax.set_ylabel("outliers found")
    with_eps = [(n, e["eps"]) for n, e in zip(numbers, cycles, strict=True) if "eps" in e]
    if with_eps:
        twin = ax.twinx()
        twin.plot(*zip(*with_eps, strict=True), "o-", color="black", markersize=3,
                  label="DBSCAN eps")
        twin.set_ylabel("DBSCAN eps (latent-space distance)")
    figure.legend(loc="outside upper right", ncols=2, fontsize="small")
    ax.set_title("Outliers and clustering radius per agent cycle")
    save_figure(figure, path)


def plot_training(data: RunData, path: Path) -> None:
    rounds = role_spans(data, "trainer", "train_round")
    if not rounds:
        return save_no_data(path, "no training rounds yet")
    figure = new_figure(8, 4.5)
    ax = figure.subplots()
    for key, label, style in (("loss", "training loss", "o-"), ("val_loss", "validation loss",
                                                                  "s-")):
        points = [(e.get("round", i + 1), e[key]) for i, e in enumerate(rounds)
                  if _finite([e.get(key)])]
        if points:
            ax.plot(*zip(*points, strict=True), style, markersize=3, label=label)
    published = published_rounds(rounds, role_spans(data, "trainer", "publish_model"))
    if published:
        ax.plot(*zip(*published, strict=True), "*", color="darkgreen", markersize=9,
                label="model published")
    losses = _finite(e.get(k) for e in rounds for k in ("loss", "val_loss"))
    if losses and min(losses) > 0 and max(losses) > 10 * min(losses):
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training round")
    ax.set_ylabel("CVAE loss (reconstruction + KL)")
    ax.set_title("CVAE training and validation loss per round")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3, which="both")
    save_figure(figure, path)


def published_rounds(rounds: list[Event], publishes: list[Event]) -> list[tuple[int, float]]:
    """(round, validation loss) of each round whose model was published (the round before it)."""
    starts = [r["t"] for r in rounds]
    points = []
    for publish in publishes:
        index = int(np.searchsorted(starts, publish["t"], side="right")) - 1
        if index >= 0 and _finite([rounds[index].get("val_loss")]):
            points.append((rounds[index].get("round", index + 1), rounds[index]["val_loss"]))
    return points


PLOTS: dict[str, Callable[[RunData, Path], None]] = {
    "timeline.png": plot_timeline, "rmsd_windows.png": plot_rmsd_windows,
    "min_rmsd.png": plot_min_rmsd, "agent_cycles.png": plot_agent_cycles,
    "training_loss.png": plot_training,
}


# --------------------------------------------------------------------------- pages


def run_state(data: RunData) -> str:
    ended = all(tasks[-1]["event"] == "task_end" for tasks in data.by_task.values())
    return "finished" if data.events and ended else "partial (still running or cut short)"


def write_markdown(data: RunData, out: Path, summary: dict[str, Any]) -> None:
    lines = [f"# Run report: {data.run.root}", "",
             f"State: {summary['state']}; {len(data.by_task)} tasks, {len(data.events)} events,"
             f" {summary['span_s']:.1f} s from first to last event.", ""]
    lines += [f"- note: {note}" for note in data.notes] + [""]
    lines += ["## Per component", "", (out / "table.md").read_text(), table_legend(), "",
              "## ADIOS I/O and streamed data", "", (out / "io.md").read_text()]
    for name, title in FIGURES.items():
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    (out / "report.md").write_text("\n".join(lines))


def table_legend() -> str:
    return ("An iteration is a simulation segment, an aggregator write, a training round or an"
            " agent cycle. Iterations/hour count per task: iterations over the summed lifetimes"
            " of the component's tasks. Busy: share of those lifetimes spent in iterations."
            " Samples: frames per segment/write/cycle, training samples per round.")


def write_html(data: RunData, out: Path, summary: dict[str, Any]) -> None:
    rows = [table_cells(ComponentRow(**r)) for r in summary["components"]]
    parts = [f"<h1>Run report: {html.escape(str(data.run.root))}</h1>",
             f"<p>State: {html.escape(summary['state'])}; {len(data.by_task)} tasks,"
             f" {len(data.events)} events, {summary['span_s']:.1f} s.</p>"]
    parts += [f"<p class=note>note: {html.escape(n)}</p>" for n in data.notes]
    parts += ["<h2>Per component</h2>", html_table(TABLE_COLUMNS, rows),
              f"<p>{html.escape(table_legend())} (<a href='table.csv'>CSV</a>)</p>",
              "<h2>ADIOS I/O and streamed data</h2>", _html_io(out)]
    for name, title in FIGURES.items():
        parts += [f"<h2>{html.escape(title)}</h2>",
                  f"<img src='{name}' alt='{html.escape(title)}'>"]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>ddmd_stream run report"
            "</title><style>body{font-family:sans-serif;max-width:1200px;margin:auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
            "img{max-width:100%}.note{color:#a60}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    (out / "index.html").write_text(page)


def _html_io(out: Path) -> str:
    lines = (out / "io.md").read_text().splitlines()[2:]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line]
    return html_table(("quantity", "value"), rows)


def html_table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


# --------------------------------------------------------------------------- entry


def build_report(run_dir: Path, out_dir: Path | None = None, overhead_events: int = 20_000
                 ) -> dict[str, Any]:
    """Write every report file; returns the summary (also written to summary.json)."""
    data = load_run(run_dir)
    out = Path(out_dir) if out_dir else data.run.report_dir
    out.mkdir(parents=True, exist_ok=True)
    rows = component_table(data)
    io = io_summary(data)
    overhead = recorder_overhead(data, measure_event_cost(overhead_events))
    summary = {"run_dir": str(data.run.root), "state": run_state(data),
               "span_s": max((end_of(e) for e in data.events), default=data.t0) - data.t0,
               "components": [asdict(r) for r in rows], "io": io, "recorder": overhead,
               "notes": data.notes}
    write_table(rows, out)
    (out / "io.md").write_text(io_markdown(io, overhead))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    for name, plot in PLOTS.items():
        plot(data, out / name)
    write_markdown(data, out, summary)
    write_html(data, out, summary)
    return summary
