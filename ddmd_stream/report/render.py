"""The report's text files, each rendered from the summary of `metrics.summarize`.

- `table.md`, `table.csv`: per component (the CSV holds the unrounded numbers)
- `io.md`: ADIOS I/O time shares, frames and bytes streamed, recorder overhead
- `summary.json`: the summary itself
- `report.md` and `index.html`: all of the above with the figures of `plots.FIGURES`

Markdown and HTML are built side by side from the same cells (`table_cells`, `io_rows`).
"""

from __future__ import annotations

import csv
import html
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import fields
from io import StringIO
from pathlib import Path
from typing import Any

from ddmd_stream.report.metrics import COMPONENTS, ComponentRow, Summary
from ddmd_stream.report.plots import FIGURES

logger = logging.getLogger(__name__)

Rows = Iterable[Sequence[str]]

TABLE_COLUMNS = ("component", "tasks", "iterations", "mean duration per iteration (s)",
                 "iterations/hour per task", "busy (%)", "CPU;GPU per task",
                 "samples per iteration", "outliers per iteration")
TABLE_LEGEND = ("An iteration is a simulation segment, an aggregator write, a training round or"
                " an agent cycle. Iterations/hour count per task: iterations over the summed"
                " lifetimes of the component's tasks. Busy: share of those lifetimes spent in"
                " iterations. Samples: frames per segment/write/cycle, training samples per"
                " round.")
IO_COLUMNS = ("quantity", "value")
ACCOUNTING_HEADING = "Frame accounting"
ACCOUNTING_COLUMNS = ("simulation", "streamed", "stored", "duplicates", "missing",
                      "of which in flight", "unlisted", "")
ACCOUNTING_LEGEND = ("Each simulation's ledger of the frames it streamed against the stores "
                     "(ddmd-stream verify RUN). In flight: missing after the last stored frame "
                     "of a process start (queued when it was killed). Unlisted: stored but not "
                     "in the ledger (killed between the put and the ledger write).")
PER_COMPONENT = "Per component"
IO_HEADING = "ADIOS I/O and streamed data"
STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:auto}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
         "img{max-width:100%}.note{color:#a60}")


# --------------------------------------------------------------------------- cells


def component_rows(summary: Summary) -> list[ComponentRow]:
    return [ComponentRow(**row) for row in summary["components"]]


def table_cells(row: ComponentRow) -> list[str]:
    mean = "-" if row.mean_s is None else f"{row.mean_s:.3g}"
    return [row.component, str(row.tasks), str(row.iterations), mean,
            _fmt(row.per_hour, 1), _fmt(None if row.busy is None else 100 * row.busy, 1),
            row.cpu_gpu, _fmt(row.samples, 1), _fmt(row.outliers, 1)]


def io_rows(io: dict[str, Any], recorder: dict[str, Any]) -> list[tuple[str, str]]:
    """(quantity, value) lines of the I/O table."""
    per_role = ", ".join(f"{COMPONENTS.get(r, r)} {s:.2f} s"
                         for r, s in io["adios_s_by_role"].items())
    written = io["sim_bytes_written_to_disk"]
    return [
        ("ADIOS I/O time, all tasks", f"{io['adios_s']:.2f} s of {io['task_s']:.1f} s task time"
         f" = {_pct(io['io_share_all'])}"),
        ("ADIOS I/O time by component", per_role or "-"),
        ("ADIOS put time, simulations", f"{io['sim_put_s']:.2f} s of {io['sim_segment_s']:.1f} s"
         f" in segments = {_pct(io['io_share_sim'])}"),
        ("frame preparation (reporter), simulations", _pct(io["reporter_share_sim"])),
        ("segments run / restarts", f"{io['segments']} / {io['restarts']}"),
        ("simulated", f"{io['ns_simulated']:.4g} ns"),
        ("frames streamed by simulations", _count(io["sim_frames_streamed"])),
        ("bytes streamed by simulations", _bytes(io["sim_bytes_streamed"])),
        ("bytes written to disk by simulations",
         _bytes(written) if written else "0 (all frames streamed)"),
        ("frames aggregated into stores", f"{io['aggregated_frames']}"),
        ("store size on disk", _bytes(io["store_bytes_on_disk"])),
        ("event recorder overhead (estimate)", _recorder(recorder)),
    ]


def _recorder(recorder: dict[str, Any]) -> str:
    return (f"{recorder['us_per_event']:.2f} µs/event (benchmarks/event_overhead.py) ×"
            f" {recorder['events']} events = {_pct(recorder['share'], 4)} of task time"
            f" (busiest task {_pct(recorder['worst_task_share'], 4)})")


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(share: float | None, digits: int = 2) -> str:
    return "-" if share is None else f"{100 * share:.{digits}f} %"


def _count(count: int | None) -> str:
    return "- (needs config.yaml while the simulations run)" if count is None else str(count)


def _bytes(count: int | None) -> str:
    if count is None:
        return "- (known when the simulations end)"
    return f"{count / 1e6:.2f} MB ({count} B)"


# --------------------------------------------------------------------------- Markdown


def accounting_rows(summary: Summary) -> list[list[str]]:
    rows = []
    for row in summary.get("accounting", []):
        flag = "DUPLICATES" if row["duplicates"] else ("LOST" if row["missing"] else "ok")
        rows.append([str(row["sim_id"]), *(str(row[key]) for key in (
            "streamed", "stored", "duplicates", "missing", "in_flight", "unlisted")), flag])
    return rows


def jobs_line(summary: Summary) -> str:
    """The campaign's jobs in one line ('' for a run of one job)."""
    jobs = summary.get("jobs", [])
    if len(jobs) < 2:
        return ""
    starts = ", ".join(f"job {job['job']} at {job['start_s']:.0f} s" for job in jobs[1:])
    return f"{len(jobs)} jobs (launches) in this run directory: {starts}."


def markdown_table(header: Sequence[str], rows: Rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def table_markdown(summary: Summary) -> str:
    return markdown_table(TABLE_COLUMNS, map(table_cells, component_rows(summary)))


def io_markdown(summary: Summary) -> str:
    return markdown_table(IO_COLUMNS, io_rows(summary["io"], summary["recorder"]))


def markdown_page(summary: Summary) -> str:
    lines = [f"# Run report: {summary['run_dir']}", "", f"State: {_state_line(summary)}"
             f" {summary['span_s']:.1f} s from first to last event.", "",
             f"Steering objective: {summary['objective']}.", ""]
    lines += [f"- note: {note}" for note in summary["notes"]] + [""]
    if jobs_line(summary):
        lines += [jobs_line(summary), ""]
    lines += [f"## {PER_COMPONENT}", "", table_markdown(summary), TABLE_LEGEND, "",
              f"## {IO_HEADING}", "", io_markdown(summary)]
    if accounting_rows(summary):
        lines += [f"## {ACCOUNTING_HEADING}", "",
                  markdown_table(ACCOUNTING_COLUMNS, accounting_rows(summary)),
                  ACCOUNTING_LEGEND, ""]
    for name, title in FIGURES.items():
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    return "\n".join(lines)


def _state_line(summary: Summary) -> str:
    return f"{summary['state']}; {summary['tasks']} tasks, {summary['events']} events,"


# --------------------------------------------------------------------------- HTML


def html_table(header: Sequence[str], rows: Rows) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_page(summary: Summary, head: str = "", intro: str = "", version: str = "") -> str:
    """The report page; the live page adds `head` (its refresh), `intro` (after the title) and
    `version` (appended to the figures' URLs so that a reload fetches them anew)."""
    query = f"?v={version}" if version else ""
    parts = [f"<h1>Run report: {html.escape(summary['run_dir'])}</h1>", intro,
             f"<p>State: {html.escape(_state_line(summary))} {summary['span_s']:.1f} s.</p>",
             f"<p>Steering objective: {html.escape(summary['objective'])}.</p>"]
    parts += [f"<p class=note>note: {html.escape(n)}</p>" for n in summary["notes"]]
    parts += [f"<h2>{PER_COMPONENT}</h2>",
              html_table(TABLE_COLUMNS, map(table_cells, component_rows(summary))),
              f"<p>{html.escape(TABLE_LEGEND)} (<a href='table.csv'>CSV</a>)</p>",
              f"<h2>{html.escape(IO_HEADING)}</h2>",
              html_table(IO_COLUMNS, io_rows(summary["io"], summary["recorder"]))]
    if jobs_line(summary):
        parts.insert(4, f"<p>{html.escape(jobs_line(summary))}</p>")
    if accounting_rows(summary):
        parts += [f"<h2>{ACCOUNTING_HEADING}</h2>",
                  html_table(ACCOUNTING_COLUMNS, accounting_rows(summary)),
                  f"<p>{html.escape(ACCOUNTING_LEGEND)}</p>"]
    for name, title in FIGURES.items():
        parts += [f"<h2>{html.escape(title)}</h2>",
                  f"<img src='{name}{query}' alt='{html.escape(title)}'>"]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>ddmd_stream run report"
            f"</title><style>{STYLE}</style>{head}</head><body>" + "\n".join(parts)
            + "</body></html>\n")


# --------------------------------------------------------------------------- files


def table_csv(summary: Summary) -> str:
    """Per component, unrounded; empty cells for unknown values."""
    text = StringIO()
    writer = csv.writer(text)
    writer.writerow([f.name for f in fields(ComponentRow)])
    writer.writerows([("" if v is None else v) for v in row.values()]
                     for row in summary["components"])
    return text.getvalue()


def write_pages(summary: Summary, out: Path) -> None:
    """Write every text file of the report into `out`."""
    pages = {"table.md": table_markdown(summary), "table.csv": table_csv(summary),
             "io.md": io_markdown(summary),
             "summary.json": json.dumps(summary, indent=1, default=str),
             "report.md": markdown_page(summary), "index.html": html_page(summary)}
    for name, text in pages.items():
        (out / name).write_text(text, newline="" if name.endswith(".csv") else None)
        logger.info("wrote %s", out / name)
