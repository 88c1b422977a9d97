"""The report's figures, one PNG each (matplotlib's Agg canvas: no pyplot, no global state).

`FIGURES` names them (file → title, in page order) and `draw_figures` writes them all. A plot
with nothing to show yet (a run just started) is a placeholder that says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ddmd_stream.frames import RMSD, SIM_ID
from ddmd_stream.report.load import (
    WALL,
    Event,
    RunData,
    end_of,
    finite,
    role_of,
    role_spans,
    spans,
    task_intervals,
)
from ddmd_stream.report.metrics import COMPONENTS, ITERATION, published_rounds, run_span
from ddmd_stream.rundir import ROLES

logger = logging.getLogger(__name__)

FIGURES = {
    "timeline.png": "Task timeline",
    "rmsd_windows.png": "RMSD to the folded structure per time window",
    "min_rmsd.png": "Minimum RMSD over time",
    "agent_cycles.png": "Outliers and DBSCAN eps per agent cycle",
    "training_loss.png": "Training and validation loss per round",
}
COLOURS = {"sim": "tab:blue", "aggregator": "tab:orange", "trainer": "tab:green",
           "agent": "tab:purple"}
# timeline markers: event → (marker, colour, legend text)
MARKS = {"restart": ("v", "black", "simulation restart from an outlier"),
         "publish_model": ("^", "darkgreen", "model published"),
         "publish_catalog": ("D", "crimson", "outlier catalog published")}
RMSD_WINDOWS = 6


# --------------------------------------------------------------------------- canvas


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


def frame_axis(data: RunData) -> tuple[np.ndarray, str, float]:
    """x values of the stored frames: time since run start, or arrival order without times."""
    wall = data.frames.get(WALL)
    if wall is None:
        return np.arange(len(data.frames[RMSD]), dtype=float), "frames in arrival order", 1.0
    scale, label = time_axis(float(wall[-1]) - data.t0)
    return (wall - data.t0) / scale, label, scale


# --------------------------------------------------------------------------- timeline


def plot_timeline(data: RunData, path: Path) -> None:
    tasks = data.by_task
    if not tasks:
        return save_no_data(path, "no events yet", 11, 3.0)
    figure = new_figure(11, max(3.0, 0.45 * len(tasks) + 1.6))
    ax = figure.subplots()
    span = run_span(data)
    scale, label = time_axis(span)
    for lane, events in enumerate(tasks.values()):
        _draw_lane(ax, lane, events, data.t0, scale)
    for job in data.jobs[1:]:  # where each later job of the campaign began
        start = (job["t"] - data.t0) / scale
        ax.axvline(start, color="black", linestyle="--", linewidth=1)
        ax.annotate(f"job {job.get('job', '?')}", (start, -0.55), fontsize="small")
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


# --------------------------------------------------------------------------- frames


def plot_rmsd_windows(data: RunData, path: Path, windows: int = RMSD_WINDOWS) -> None:
    """Histogram of RMSD to the folded structure for successive windows of arrival time."""
    if len(data.frames.get(RMSD, ())) == 0:
        return save_no_data(path, "no aggregated frames yet")
    from matplotlib import colormaps

    figure = new_figure(8, 4.5)
    ax = figure.subplots()
    rmsd = data.frames[RMSD]
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
    if len(data.frames.get(RMSD, ())) == 0:
        return save_no_data(path, "no aggregated frames yet")
    figure = new_figure(8, 4.5)
    ax = figure.subplots()
    rmsd, sims = data.frames[RMSD], data.frames[SIM_ID]
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


# --------------------------------------------------------------------------- agent, trainer


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


LOSSES = (("loss", "training loss", "o-"), ("val_loss", "validation loss", "s-"))


def plot_training(data: RunData, path: Path) -> None:
    rounds = role_spans(data, "trainer", "train_round")
    if not rounds:
        return save_no_data(path, "no training rounds yet")
    figure = new_figure(8, 4.5)
    ax = figure.subplots()
    for key, label, style in LOSSES:
        points = [(e.get("round", i + 1), e[key]) for i, e in enumerate(rounds)
                  if finite([e.get(key)])]
        if points:
            ax.plot(*zip(*points, strict=True), style, markersize=3, label=label)
    published = published_rounds(rounds, role_spans(data, "trainer", "publish_model"))
    if published:
        ax.plot(*zip(*published, strict=True), "*", color="darkgreen", markersize=9,
                label="model published")
    _log_scale_if_wide(ax, finite(e.get(key) for e in rounds for key, _, _ in LOSSES))
    ax.set_xlabel("training round")
    ax.set_ylabel("CVAE loss (reconstruction + KL)")
    ax.set_title("CVAE training and validation loss per round")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3, which="both")
    save_figure(figure, path)


def _log_scale_if_wide(ax: Any, values: list[float]) -> None:
    """A log y axis (ticks at 1, 2, 5 × 10ⁿ) when positive `values` span over a decade."""
    if not values or min(values) <= 0 or max(values) <= 10 * min(values):
        return
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())


# --------------------------------------------------------------------------- all


PLOTS: dict[str, Callable[[RunData, Path], None]] = {
    "timeline.png": plot_timeline, "rmsd_windows.png": plot_rmsd_windows,
    "min_rmsd.png": plot_min_rmsd, "agent_cycles.png": plot_agent_cycles,
    "training_loss.png": plot_training,
}


def draw_figures(data: RunData, out: Path) -> None:
    """Write every figure of `FIGURES` into `out`."""
    for name in FIGURES:
        PLOTS[name](data, out / name)
