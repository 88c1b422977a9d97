"""The report's numbers, computed from a loaded `RunData` (no file access, no timing).

`summarize` gathers them into the summary that `render` writes out (summary.json, tables,
pages): per-component rows like Table 2 of the DeepDriveMD-S paper, ADIOS I/O shares, the
volume streamed, the event recorder's estimated overhead and the run's state.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ddmd_stream.report.load import (
    Event,
    RunData,
    end_of,
    finite,
    role_events,
    role_of,
    role_spans,
    spans,
    store_writer,
    task_seconds,
)
from ddmd_stream.rundir import ROLES

Summary = dict[str, Any]

COMPONENTS = {"sim": "Simulation", "aggregator": "Aggregator", "trainer": "Training",
              "agent": "Agent"}
# the event that is one iteration of each role, and the field holding its samples
ITERATION = {"sim": ("segment", None), "aggregator": ("write", "frames"),
             "trainer": ("train_round", "samples"), "agent": ("cycle", "frames")}
# events whose duration is ADIOS I/O time: (role, event, field holding seconds)
ADIOS_TIMES = (("sim", "segment", "put_s"), ("aggregator", "read", "dur"),
               ("aggregator", "write", "dur"), ("trainer", "read", "dur"),
               ("agent", "read", "dur"))

# µs per `EventRecorder.event` call, measured by `benchmarks/event_overhead.py` (100,000 calls
# to a real file, idle machine) on 2026-11-29; see benchmarks/RESULTS.md. Under load (~5) the
# same script measured 22.9 µs. Rerun it and update this after changing the recorder.
EVENT_COST_US = 6.61


# --------------------------------------------------------------------------- per component


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


def _mean(values: Any) -> float | None:
    numbers = finite(values)
    return sum(numbers) / len(numbers) if numbers else None


# --------------------------------------------------------------------------- I/O


def adios_seconds(data: RunData) -> dict[str, float]:
    """ADIOS time per role: simulation puts, aggregator reads and writes, store reads."""
    seconds: dict[str, float] = defaultdict(float)
    for role, name, key in ADIOS_TIMES:
        for events in role_events(data, role).values():
            seconds[role] += sum(finite(e.get(key) for e in spans(events, name)))
    return dict(seconds)


def io_summary(data: RunData) -> dict[str, Any]:
    """ADIOS I/O shares and the volume streamed."""
    adios = adios_seconds(data)
    total = sum(task_seconds(events) for events in data.by_task.values())
    sims = role_events(data, "sim")
    segments = [e for events in sims.values() for e in spans(events, "segment")]
    segment_s = sum(finite(e.get("dur") for e in segments))
    put_s = adios.get("sim", 0.0)
    return {
        "task_s": total, "adios_s": sum(adios.values()), "adios_s_by_role": adios,
        "io_share_all": sum(adios.values()) / total if total > 0 else None,
        "sim_task_s": sum(task_seconds(events) for events in sims.values()),
        "sim_segment_s": segment_s, "sim_put_s": put_s,
        "io_share_sim": put_s / segment_s if segment_s > 0 else None,
        "reporter_share_sim": (sum(finite(e.get("reporter_s") for e in segments)) / segment_s
                               if segment_s > 0 else None),
        "segments": len(segments),
        "restarts": sum(len(spans(events, "restart")) for events in sims.values()),
        "ns_simulated": sum(finite(e.get("ns") for e in segments)),
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
    sim_written = [size for store, size in data.store_bytes.items()
                   if role_of(store_writer(store)) == "sim"]
    return {"sim_frames_streamed": frames, "sim_bytes_streamed": bytes_,
            "sim_bytes_written_to_disk": sum(sim_written),
            "aggregated_frames": sum(e.get("frames", 0) for e in writes),
            "store_bytes_on_disk": sum(data.store_bytes.values())}


def _add(total: int | None, value: int) -> int | None:
    return None if total is None else total + value


# --------------------------------------------------------------------------- recorder, rounds


def recorder_overhead(data: RunData, us_per_event: float = EVENT_COST_US) -> dict[str, Any]:
    """Estimated recording time over task time: all tasks together and the busiest task."""
    lives = {task: task_seconds(events) for task, events in data.by_task.items()}
    total = sum(lives.values())
    shares = [len(data.by_task[task]) * us_per_event * 1e-6 / s for task, s in lives.items()
              if s > 0]
    return {"us_per_event": us_per_event, "events": len(data.events),
            "share": len(data.events) * us_per_event * 1e-6 / total if total > 0 else None,
            "worst_task_share": max(shares, default=None)}


def published_rounds(rounds: list[Event], publishes: list[Event]) -> list[tuple[int, float]]:
    """(round, validation loss) of each round whose model was published (the round before it)."""
    starts = [r["t"] for r in rounds]
    points = []
    for publish in publishes:
        index = int(np.searchsorted(starts, publish["t"], side="right")) - 1
        if index >= 0 and finite([rounds[index].get("val_loss")]):
            points.append((rounds[index].get("round", index + 1), rounds[index]["val_loss"]))
    return points


# --------------------------------------------------------------------------- whole run


def run_state(data: RunData) -> str:
    ended = all(tasks[-1]["event"] == "task_end" for tasks in data.by_task.values())
    return "finished" if data.events and ended else "partial (still running or cut short)"


def run_span(data: RunData) -> float:
    """Seconds from the first event's start to the last event's end."""
    return max((end_of(e) for e in data.events), default=data.t0) - data.t0


def steering_objective(config: Any) -> str:
    """What the run steered toward, in words (the report and README say it)."""
    if config is None:
        return "unknown (no config.yaml)"
    if config.workflow.mode == "plain":
        return "none (plain MD, no restarts)"
    if config.agent.detector == "uniform":
        return "none (restarts from uniformly random frames: the control)"
    if config.ranking == "rmsd":
        return f"lowest RMSD to {config.simulation.reference_pdb} (agent.ranking: rmsd)"
    if config.ranking == "score":
        return "novelty: most outlying in the model's latent space first (agent.ranking: score)"
    return "random outliers (agent.ranking: random)"


def summarize(data: RunData) -> Summary:
    """Every number of the report (what summary.json holds and the pages show)."""
    return {"run_dir": str(data.run.root), "state": run_state(data), "span_s": run_span(data),
            "objective": steering_objective(data.config),
            "tasks": len(data.by_task), "events": len(data.events),
            "components": [asdict(row) for row in component_table(data)],
            "io": io_summary(data), "recorder": recorder_overhead(data),
            "accounting": data.accounting, "jobs": job_starts(data),
            "notes": data.notes}


def job_starts(data: RunData) -> list[dict[str, Any]]:
    """Each launch of the campaign, with its start in seconds after the run's first event."""
    return [{"job": job.get("job"), "start_s": job["t"] - data.t0,
             "on_existing": job.get("on_existing")} for job in data.jobs]
