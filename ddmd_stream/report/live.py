"""The live page: RUN/report/index.html kept current while a run goes, reloading itself.

`python -m ddmd_stream.report.live RUN_DIR [--interval S]` redraws the report's page and
figures every S seconds from what is new since the last update (`tail.EventTail`,
`tail.FrameTail`: no file is read twice), adds what is running and what restarted (RUN/status.json,
the tasks' status.json) and a figure of frames per simulation, and on SIGTERM writes a last
page that no longer reloads. The launcher's Monitor runs it as a child process
(`LivePageProcess`), so matplotlib and store reads never share the launcher's interpreter.
Every file lands by rename: a browser never sees half a page or half a figure.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ddmd_stream.atomic import atomic_write
from ddmd_stream.errors import InputError
from ddmd_stream.frames import SIM_ID
from ddmd_stream.report.load import (
    Event,
    RunData,
    check_run_dir,
    folder_bytes,
    load_run_config,
    merge_frames,
    role_spans,
)
from ddmd_stream.report.metrics import summarize
from ddmd_stream.report.plots import draw_figures, new_figure, save_figure, save_no_data
from ddmd_stream.report.render import html_page, html_table, write_pages
from ddmd_stream.report.tail import EventTail, FrameTail
from ddmd_stream.rundir import RunDir
from ddmd_stream.workflow.progress import (
    TASK_COLUMNS,
    Summary,
    TaskLives,
    read_run_status,
    read_task_status,
    summary_rows,
    task_rows,
)

logger = logging.getLogger(__name__)

FRAMES_FIGURE = "frames_per_sim.png"
LOG_NAME = "live.log"
EXIT_BAD_INPUT = 2


class LivePage:
    """The page of one run, updated from what is new since the previous update."""

    def __init__(self, run: RunDir, interval_s: float):
        self.run, self.interval_s = run, interval_s
        self.events: list[Event] = []
        self.event_tail = EventTail(run)
        self.lives = TaskLives()  # starts, restarts, exits: from the events as they come
        self.frame_tail: FrameTail | None = None
        self.config: Any = None
        self.updates = 0

    def update(self, live: bool = True) -> Path:
        """Write the page and its figures into RUN/report; returns the page's path."""
        data = self._read_new()
        out = self.run.report_dir
        staging = out / ".live"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        summary = summarize(data)
        draw_figures(data, staging)
        plot_frames_per_sim(data, staging / FRAMES_FIGURE)
        write_pages(summary, staging)
        self.updates += 1
        page = html_page(summary, head=self._refresh(live), intro=self._intro(live),
                         version=str(self.updates))
        atomic_write(staging / "index.html", page, durable=False)
        _move_all(staging, out)
        return out / "index.html"

    def _read_new(self) -> RunData:
        notes: list[str] = []
        if self.config is None:
            self.config = load_run_config(self.run, notes)
        new = self.event_tail.read_new()
        self.lives.add(new)
        if new:
            self.events.extend(new)
            self.events.sort(key=lambda e: e["t"])  # nearly sorted: cheap
        data = RunData(self.run, self.events, self.config, notes=notes)
        frames = self._frame_tail()
        if frames is not None:
            frames.update()
            data.frames = merge_frames(frames.stored(), data.by_task, data.notes)
        data.store_bytes = {store: folder_bytes(store) for store in self.run.aggregator_stores()}
        return data

    def _frame_tail(self) -> FrameTail | None:
        if self.frame_tail is None and self.config is not None:
            streams = self.config.streams
            self.frame_tail = FrameTail(self.run, self.run.adios_xml, streams.aggregator_io,
                                        streams.liveness_timeout_s)
        return self.frame_tail

    def _refresh(self, live: bool) -> str:
        seconds = max(1, round(self.interval_s))
        return f"<meta http-equiv='refresh' content='{seconds}'>" if live else ""

    def _intro(self, live: bool) -> str:
        stamp = time.strftime("%H:%M:%S UTC", time.gmtime())
        if live:
            state = (f"Live page, updated {stamp} (update {self.updates}); it is redrawn and"
                     f" reloads itself every {self.interval_s:.0f} s while the run goes.")
        else:
            state = (f"The run has ended ({stamp}); this page no longer reloads."
                     " <code>ddmd-stream report RUN</code> writes the full report.")
        # the page's own events are newer than status.json's
        summary = (read_run_status(self.run) or Summary.empty()).with_lives(self.lives)
        status = html_table(("quantity", "value"), summary_rows(summary))
        rows = task_rows(read_task_status(self.run), summary, time.time())
        tasks = html_table(TASK_COLUMNS, rows)
        return (f"<p class=live>{state}</p><h2>Now</h2>{status}<h2>Tasks</h2>{tasks}"
                f"<h2>Frames per simulation</h2>"
                f"<img src='{FRAMES_FIGURE}?v={self.updates}' alt='Frames per simulation'>")

    def close(self) -> None:
        if self.frame_tail is not None:
            self.frame_tail.close()


def _move_all(staging: Path, out: Path) -> None:
    """Rename every staged file into `out`, the page last (it names the figures)."""
    files = sorted(staging.iterdir(), key=lambda f: f.name == "index.html")
    for file in files:
        os.replace(file, out / file.name)
    staging.rmdir()


def plot_frames_per_sim(data: RunData, path: Path) -> None:
    """Stored frames of each simulation, with its restarts from outliers over the bar."""
    sims = data.frames.get(SIM_ID)
    if sims is None or len(sims) == 0:
        return save_no_data(path, "no aggregated frames yet", 8, 3.5)
    ids, counts = np.unique(sims, return_counts=True)
    restarts = _restarts_per_sim(data)
    figure = new_figure(8, 3.5)
    ax = figure.subplots()
    bars = ax.bar([str(i) for i in ids], counts, color="tab:blue", alpha=0.8)
    ax.bar_label(bars, [_restarts_label(restarts.get(int(i), 0)) for i in ids], fontsize="small")
    ax.set_xlabel("simulation")
    ax.set_ylabel("frames stored")
    ax.set_title("Frames stored per simulation (restarts from outliers over each bar)")
    save_figure(figure, path)


def _restarts_label(count: int) -> str:
    return f"{count} restart" + ("" if count == 1 else "s")


def _restarts_per_sim(data: RunData) -> dict[int, int]:
    counts: dict[int, int] = {}
    for event in role_spans(data, "sim", "restart"):
        sim = int(event["task"].rsplit("-", 1)[1])
        counts[sim] = counts.get(sim, 0) + 1
    return counts


# --------------------------------------------------------------------------- the process


def serve(run: RunDir, interval_s: float, parent: int | None) -> None:
    """Update the page every `interval_s` until SIGTERM/SIGINT or the parent's end; then the
    last page (no reload). An update that fails is logged; the next one tries again."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    page = LivePage(run, interval_s)
    try:
        while not stop.is_set():
            _safe_update(page, live=True)
            _wait(stop, interval_s, parent)
        _safe_update(page, live=False)
    finally:
        page.close()


def _safe_update(page: LivePage, live: bool) -> None:
    try:
        logger.info("wrote %s", page.update(live))
    except Exception:
        logger.exception("live page update failed (next try in %.0f s)", page.interval_s)


def _wait(stop: threading.Event, seconds: float, parent: int | None) -> None:
    """Until `seconds` passed, `stop` is set, or the parent process is gone (then set)."""
    end = time.monotonic() + seconds
    while not stop.wait(min(1.0, max(0.0, end - time.monotonic()))):
        if parent is not None and os.getppid() != parent:
            logger.info("launcher gone: last update")
            stop.set()
        elif time.monotonic() >= end:
            return


class LivePageProcess:
    """The live page's child process, as the launcher's Monitor runs it."""

    def __init__(self, run: RunDir, interval_s: float, max_starts: int = 3):
        self.run, self.interval_s, self.max_starts = run, interval_s, max_starts
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def log_file(self) -> Path:
        return self.run.report_dir / LOG_NAME

    def keep_running(self) -> None:
        """Start the updater, or start it again when it died (at most `max_starts` times)."""
        if self.process is not None and self.process.poll() is None:
            return
        if self.process is not None:
            logger.warning("live page updater exited with %s (see %s)", self.process.returncode,
                           self.log_file)
            self.process = None
        if self.starts < self.max_starts:
            self._start()

    def _start(self) -> None:
        self.starts += 1
        self.run.report_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "ddmd_stream.report.live", str(self.run.root),
                   "--interval", str(self.interval_s), "--parent", str(os.getpid())]
        with open(self.log_file, "a") as log:  # new session: a Ctrl-C is the launcher's alone
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        logger.info("live page %s (updated every %.0f s)", self.run.report_dir / "index.html",
                    self.interval_s)

    def finish(self, timeout_s: float = 30.0) -> None:
        """Ask for the last page (SIGTERM) and wait for it; kill the updater after `timeout_s`."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("live page updater did not end in %.0f s: killed", timeout_s)
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ddmd_stream.report.live",
                                     description=__doc__)
    parser.add_argument("run_dir", type=Path, help="run directory (workflow.run_dir)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between updates")
    parser.add_argument("--parent", type=int, default=None,
                        help="pid whose end ends the updater (the launcher)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s "
                        "%(message)s")
    for chatty in ("matplotlib", "ddmd_stream.report.plots", "ddmd_stream.report.render"):
        logging.getLogger(chatty).setLevel(logging.WARNING)  # a line per file, every update
    try:
        run = check_run_dir(args.run_dir)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    os.nice(10)  # never take CPU from the run
    serve(run, args.interval, args.parent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
