"""Where every restart came from: one row per `restart` event of a run's simulations.

A row: the simulation that restarted (`sim_id`) and the segment it started, the frame it
restarted from (`source_sim`, `source_step`, and where recorded `source_segment`,
`source_structure`), the model version whose latent space picked it, that frame's RMSD (Å) and
the event's wall time (`time`, Unix seconds). `python -m ddmd_stream.lineage RUN_DIR` (or
`ddmd-stream lineage`) prints them as CSV.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import Any, TextIO

from ddmd_stream.errors import InputError
from ddmd_stream.events import read_run_events
from ddmd_stream.report.load import check_run_dir

LINEAGE_FIELDS = ("sim_id", "segment", "source_sim", "source_step", "source_segment",
                  "source_structure", "model_version", "rmsd", "time")
# event field → lineage column, for the columns named differently in the event
_RENAMED = {"time": "t"}


def lineage(run_dir: Path) -> list[dict[str, Any]]:
    """The restarts of a run, by simulation and then time (fields: `LINEAGE_FIELDS`; a field
    the event did not record, e.g. `source_segment` of older runs, is None)."""
    run = check_run_dir(Path(run_dir))
    rows = [restart_row(e) for e in read_run_events(run.root) if is_restart(e)]
    return sorted(rows, key=lambda row: (row["sim_id"], row["time"]))


def is_restart(event: dict[str, Any]) -> bool:
    """A simulation's `restart` event (with a task name like `sim-0003`)."""
    return event.get("event") == "restart" and str(event.get("task", "")).startswith("sim-")


def restart_row(event: dict[str, Any]) -> dict[str, Any]:
    """One lineage row of a `restart` event."""
    row = {name: event.get(_RENAMED.get(name, name)) for name in LINEAGE_FIELDS}
    row["sim_id"] = int(str(event["task"]).rsplit("-", 1)[1])
    return row


def write_lineage_csv(rows: list[dict[str, Any]], out: TextIO) -> None:
    """`rows` as CSV with a header line (empty cells for None)."""
    writer = csv.DictWriter(out, fieldnames=LINEAGE_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def lineage_csv(rows: list[dict[str, Any]]) -> str:
    """`rows` as CSV text."""
    text = io.StringIO()
    write_lineage_csv(rows, text)
    return text.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Print (or write with --out) a run's lineage as CSV; 2 with one line on bad input."""
    parser = argparse.ArgumentParser(prog="ddmd-stream lineage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="run directory (workflow.run_dir)")
    parser.add_argument("--out", type=Path, default=None, help="CSV file (default: stdout)")
    args = parser.parse_args(argv)
    try:
        text = lineage_csv(lineage(args.run_dir))
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
