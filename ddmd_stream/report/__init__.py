"""The run report: merge every task's events, tabulate per-component costs, draw the figures.

`build_report(run_dir, out_dir)` writes, into `out_dir` (default RUN_DIR/report/):

- `timeline.png`: a lane per task, colour per component; restarts and publishes marked
- `table.md`, `table.csv`: per component, like Table 2 of the DeepDriveMD-S paper
- `io.md`: ADIOS I/O time shares, frames and bytes streamed
- in `report.md` / `index.html`: the frame accounting per simulation (`accounting.py`) and, for
  a campaign of several jobs, where each began (also dashed lines on the timeline)
- `rmsd_windows.png`, `min_rmsd.png`, `agent_cycles.png`, `training_loss.png`
- `summary.json` (every number above), `report.md` and `index.html` tying it together

It works on a run that is still going: torn last lines, missing stores, missing config.
Times: events carry `time.time()` stamps; a span's `t` is its start and `dur` its length (s).

Modules, in the order `build_report` uses them:

| module | does |
|---|---|
| `load.py` | `load_run`: events, config, stored frames (`RunData`); event helpers; `ReportError` |
| `metrics.py` | `summarize`: component table, I/O, streamed volume, recorder overhead, state |
| `plots.py` | `draw_figures`: every PNG of `FIGURES` |
| `render.py` | `write_pages`: tables, summary.json, report.md, index.html from the summary |
| `__main__.py` | `python -m ddmd_stream.report RUN_DIR [--out DIR]` |
| `tail.py` | incremental readers (new event lines, new store steps) for the live page |
| `live.py` | the launcher's child that keeps `index.html` current (`workflow.live_page_s`) |

Nothing is timed while reporting: the recorder overhead uses `metrics.EVENT_COST_US`, measured
by `benchmarks/event_overhead.py`.
"""

from __future__ import annotations

from pathlib import Path

from ddmd_stream.report.load import ReportError, RunData, load_run
from ddmd_stream.report.metrics import Summary, summarize
from ddmd_stream.report.plots import FIGURES, draw_figures
from ddmd_stream.report.render import write_pages

__all__ = ["FIGURES", "ReportError", "RunData", "build_report", "load_run"]


def build_report(run_dir: Path, out_dir: Path | None = None) -> Summary:
    """Write every report file; returns the summary (also written to summary.json)."""
    data = load_run(run_dir)
    out = Path(out_dir) if out_dir else data.run.report_dir
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(data)
    draw_figures(data, out)
    write_pages(summary, out)
    return summary
