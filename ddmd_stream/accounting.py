"""Frame accounting: every frame a simulation streamed is stored exactly once.

A simulation appends the identity of each frame it hands to its stream, (segment, step), to its
ledger `RUN/tasks/sim-i/frames.ledger`: 16 bytes a frame in one `write()` on an O_APPEND file,
so a ledger survives a kill of the process (not of the node). Each start of the simulation
process (an attempt) first writes a marker record (segment -1). `account_run` compares every
ledger with the identities (sim_id, segment_id, step) found in the run's stores:

- streamed: frames in the ledger; stored: frames in the stores (duplicates included);
- duplicates: stored frames beyond the first of their identity;
- missing: streamed but not stored (lost), of which `in_flight` lie after the last stored frame
  of their attempt (still queued when the run was looked at, or lost with a simulation killed
  while they were in its stream's queue); the rest are gaps (e.g. an aggregator killed while
  holding them);
- unlisted: stored but not in the ledger (a kill between the put and the ledger write).

`python -m ddmd_stream.accounting RUN` (also `python -m ddmd_stream.streams verify RUN` and
`ddmd-stream verify RUN`) prints the table and exits 1 on a loss.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from ddmd_stream.frames import SEGMENT_ID, SIM_ID, STEP, frame_keys
from ddmd_stream.rundir import RunDir

logger = logging.getLogger(__name__)

RECORD = np.dtype([("segment", "<i8"), ("step", "<i8")])
ATTEMPT_MARKER = -1  # the segment of the record a simulation process writes when it starts
EXIT_OK, EXIT_LOSS, EXIT_BAD_INPUT = 0, 1, 2


class FrameLedger:
    """Append-only record of the frames one simulation streamed."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.record(ATTEMPT_MARKER, os.getpid())

    def record(self, segment: int, step: int) -> None:
        self.record_many([(segment, step)])

    def record_many(self, frames: Iterable[tuple[int, int]]) -> None:
        records = np.array(list(frames), dtype=RECORD)
        if len(records):
            os.write(self._fd, records.tobytes())

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_ledger(path: Path) -> np.ndarray:
    """Every (segment, step) record of a ledger (none when it does not exist)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return np.zeros(0, RECORD)
    whole = len(data) - len(data) % RECORD.itemsize  # a torn last record is ignored
    return np.frombuffer(data[:whole], dtype=RECORD)


def frames_of(records: np.ndarray) -> np.ndarray:
    """The frame records of a ledger (attempt markers left out)."""
    return records[records["segment"] != ATTEMPT_MARKER]


def attempts(records: np.ndarray) -> list[np.ndarray]:
    """The frame records of each attempt (process start) in a ledger."""
    starts = np.flatnonzero(records["segment"] == ATTEMPT_MARKER)
    bounds = [0, *starts.tolist(), len(records)]
    parts = [frames_of(records[a:b]) for a, b in pairwise(bounds)]
    return [part for part in parts if len(part)]


def last_recorded(path: Path) -> tuple[int, int] | None:
    """(segment, step) of the last frame in a ledger, or None."""
    records = frames_of(read_ledger(path))
    return (int(records["segment"][-1]), int(records["step"][-1])) if len(records) else None


@dataclass(frozen=True)
class SimAccount:
    """One simulation's line of the accounting table."""

    sim_id: int
    streamed: int
    stored: int
    duplicates: int
    missing: int
    in_flight: int
    unlisted: int

    @property
    def lost(self) -> int:
        return self.missing

    def ok(self, in_flight_allowed: int = 0) -> bool:
        return self.duplicates == 0 and self.missing - min(self.in_flight, in_flight_allowed) == 0


def account(sim_id: int, ledger: np.ndarray, stored_keys: np.ndarray) -> SimAccount:
    """Compare one simulation's ledger with the identities of its stored frames."""
    frames = frames_of(ledger)
    streamed = np.unique(frame_keys(frames["segment"], frames["step"]))
    unique_stored = np.unique(stored_keys)
    missing_keys = np.setdiff1d(streamed, unique_stored, assume_unique=True)
    return SimAccount(
        sim_id=sim_id,
        streamed=len(frames),
        stored=len(stored_keys),
        duplicates=len(stored_keys) - len(unique_stored),
        missing=len(missing_keys),
        in_flight=sum(_tail_missing(part, unique_stored) for part in attempts(ledger)),
        unlisted=len(np.setdiff1d(unique_stored, streamed, assume_unique=True)),
    )


def _tail_missing(attempt: np.ndarray, stored: np.ndarray) -> int:
    """Frames of one attempt missing after its last stored frame."""
    found = np.isin(frame_keys(attempt["segment"], attempt["step"]), stored)
    last = np.flatnonzero(found)[-1] if found.any() else -1
    return int((~found[last + 1:]).sum())


def stored_identities(run: RunDir) -> dict[str, np.ndarray]:
    """sim_id, segment_id and step of every frame in the run's stores."""
    from ddmd_stream.streams import read_store

    parts: dict[str, list[np.ndarray]] = {SIM_ID: [], SEGMENT_ID: [], STEP: []}
    for store in run.aggregator_stores():
        if not (store / "md.idx").exists():
            continue
        batch = read_store(store, list(parts))
        for name, values in parts.items():
            values.append(np.asarray(batch.get(name, np.zeros(0)), np.int64).reshape(-1))
    return {name: np.concatenate(values) if values else np.zeros(0, np.int64)
            for name, values in parts.items()}


def account_run(run: RunDir) -> list[SimAccount]:
    """The accounting table of a run: one row per simulation with a ledger or stored frames."""
    stored = stored_identities(run)
    keys = frame_keys(stored[SEGMENT_ID], stored[STEP])
    ledgers = {int(path.parent.name.split("-")[-1]): path
               for path in run.tasks_dir.glob("sim-*/frames.ledger")}
    sim_ids = sorted(set(ledgers) | {int(s) for s in np.unique(stored[SIM_ID])})
    rows = []
    for sim_id in sim_ids:
        mine = stored[SIM_ID] == sim_id
        ledger = read_ledger(ledgers[sim_id]) if sim_id in ledgers else np.zeros(0, RECORD)
        rows.append(account(sim_id, ledger, keys[mine]))
    return rows


def totals(rows: list[SimAccount]) -> dict[str, int]:
    fields = ("streamed", "stored", "duplicates", "missing", "in_flight", "unlisted")
    return {name: sum(getattr(row, name) for row in rows) for name in fields}


def format_table(rows: list[SimAccount]) -> str:
    """The table as text, one line per simulation and a total line."""
    header = f"{'sim':>5} {'streamed':>9} {'stored':>9} {'dupl.':>6} {'missing':>8} " \
             f"{'in flight':>9} {'unlisted':>8}"
    lines = [header]
    for row in rows:
        flag = "" if row.ok() else "  <-- " + ("duplicates" if row.duplicates else "lost")
        lines.append(f"{row.sim_id:>5} {row.streamed:>9} {row.stored:>9} {row.duplicates:>6} "
                     f"{row.missing:>8} {row.in_flight:>9} {row.unlisted:>8}{flag}")
    total = totals(rows)
    lines.append(f"{'all':>5} {total['streamed']:>9} {total['stored']:>9} "
                 f"{total['duplicates']:>6} {total['missing']:>8} {total['in_flight']:>9} "
                 f"{total['unlisted']:>8}")
    return "\n".join(lines)


def as_records(rows: list[SimAccount]) -> list[dict[str, int]]:
    return [asdict(row) for row in rows]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ddmd_stream.accounting",
        description="Every frame streamed vs stored, per simulation; exit 1 on a loss.")
    parser.add_argument("run_dir", type=Path, help="a run directory")
    parser.add_argument(
        "--allow-in-flight", type=int, default=0, metavar="N",
        help="per simulation, accept up to N missing frames after its last stored one "
             "(frames in flight when a task was killed); default 0")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run = RunDir(args.run_dir)
    if not run.config_file.is_file():
        print(f"error: {args.run_dir}: not a run directory (no config.yaml); give the "
              "workflow.run_dir of a run", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        rows = account_run(run)
    except Exception as error:  # a corrupt store: say which, keep going no further
        print(f"error: {args.run_dir}: cannot read its stores: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_table(rows))
    bad = [row.sim_id for row in rows if not row.ok(args.allow_in_flight)]
    if bad:
        print(f"LOSS: simulations {bad} have missing or duplicate frames", file=sys.stderr)
        return EXIT_LOSS
    print(f"OK: {totals(rows)['stored']} frames of {len(rows)} simulations, each stored once")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
