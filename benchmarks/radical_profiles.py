"""RADICAL session profiles (`RUN/radical/**/*.prof`, CSV) as start-up and stop milestones.

Used by startup.py and engine_overhead.py; radical.analytics is not needed. A profile row is
`time,event,comp,thread,uid,state,msg`; profiles exist only when `RADICAL_PROFILE` is set
(ddmd_stream turns RADICAL's profilers off by default, resources.profiling_env).
"""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path

# (event, state) -> label; the first occurrence counts unless the label says "last".
RADICAL_START = {
    ("session_start", ""): "session start",
    ("session_ok", ""): "session bridges up",
    ("advance", "PMGR_LAUNCHING"): "pilot launching",
    ("bootstrap_0_start", ""): "pilot bootstrap start",
    ("bootstrap_0_ok", ""): "pilot bootstrapped",
    ("advance", "PMGR_ACTIVE"): "pilot agent active",
    ("tmgr_create_start", ""): "EnTK task manager start",
    ("tmgr thread started", ""): "EnTK task manager up",
    ("task_run_start", ""): "first task launched",
}
LAST_START = {("task_run_start", ""): "last task launched"}
RADICAL_STOP = {
    ("task_run_stop", ""): "last task exited",
    ("term_start", ""): "EnTK terminate start",
    ("session_close", ""): "session close",
    ("termination done", ""): "EnTK terminated",
}
# spans (label, from milestone, to milestone) printed as durations
PHASES = [
    ("session bridges", "session start", "session bridges up"),
    ("pilot bootstrap (bootstrap_0.sh)", "pilot bootstrap start", "pilot bootstrapped"),
    ("agent bridges + components", "pilot bootstrapped", "pilot agent active"),
    ("EnTK task manager", "EnTK task manager start", "EnTK task manager up"),
    ("agent active -> last task launched", "pilot agent active", "last task launched"),
]


def radical_profile(run: Path) -> list[tuple[float, str, str]]:
    """(time, event, state) rows of every RADICAL profile of the run."""
    rows = []
    for prof in (run / "radical").rglob("*.prof"):
        with contextlib.suppress(OSError), open(prof, newline="") as handle:
            for row in csv.reader(handle):
                if len(row) < 6 or row[0].startswith("#"):
                    continue
                with contextlib.suppress(ValueError):
                    state = row[5] if row[1] == "advance" else ""
                    rows.append((float(row[0]), row[1], state))
    return rows


def radical_breakdown(run: Path, t0: float, t_stop: float) -> list[tuple[str, float, str]]:
    """(label, seconds, "launch"|"STOP") milestones: seconds after `t0` (launch) or after
    `t_stop` (STOP written)."""
    found: dict[str, tuple[float, str]] = {}
    for when, event, state in radical_profile(run):
        key = (event, state)
        if key in RADICAL_START and when < t_stop:
            label = RADICAL_START[key]
            if label not in found or when < found[label][0]:
                found[label] = (when, "launch")
        if key in LAST_START and when < t_stop:
            label = LAST_START[key]
            if label not in found or when > found[label][0]:
                found[label] = (when, "launch")
        if key in RADICAL_STOP and when >= t_stop:
            label = RADICAL_STOP[key]
            late = key == ("task_run_stop", "")  # the last task's exit counts
            if label not in found or (when > found[label][0]) == late:
                found[label] = (when, "STOP")
    out = [(label, when - (t0 if ref == "launch" else t_stop), ref)
           for label, (when, ref) in found.items()]
    return sorted(out, key=lambda item: (item[2] != "launch", item[1]))


def phase_durations(breakdown: list[tuple[str, float, str]]) -> list[tuple[str, float]]:
    """(phase, seconds) for the PHASES whose both ends are in `breakdown`."""
    at = {label: when for label, when, ref in breakdown if ref == "launch"}
    return [(name, at[end] - at[start]) for name, start, end in PHASES
            if start in at and end in at]
