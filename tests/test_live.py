"""The live page (RUN/report/index.html while a run goes), `ddmd-stream status` and the
Monitor going on through faults; the page checked in a real headless Chromium."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pytest
from conftest import SST_XML, start_launcher, stop_launcher, tiny_run, wait_for

from ddmd_stream.cli import main as cli_main
from ddmd_stream.report import FIGURES
from ddmd_stream.report.live import FRAMES_FIGURE
from ddmd_stream.rundir import RunDir
from ddmd_stream.workflow import progress
from ddmd_stream.workflow.progress import Monitor

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "images" / "live-page.png"
RUN_SECONDS = 100  # at most: the run stops once the agent published a catalog (~1 min)
LIVE_PAGE_S = 5
REFRESH = f"http-equiv='refresh' content='{LIVE_PAGE_S}'"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# --------------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A short local run with a live page every 5 s, stopped by its first outlier catalog (so
    a loaded machine gets more time); what was seen while it went."""
    folder = tmp_path_factory.mktemp("live")
    run = folder / "run"
    page = run / "report" / "index.html"
    config = tiny_run(run, SST_XML, workflow={"engine": "local", "duration_s": RUN_SECONDS,
                                              "stop_catalog_outliers": 1,
                                              "live_page_s": LIVE_PAGE_S})
    launcher = start_launcher(config, folder / "config.yaml")
    seen: dict = {"run": run}
    try:
        seen["mid_run_page"] = wait_for(lambda: REFRESH in _text(page), timeout_s=RUN_SECONDS)
        seen["sim_running"] = wait_for(lambda: _state(run, "sim-0000") == "running",
                                       timeout_s=RUN_SECONDS, interval_s=1.0)
        seen["launcher_running"] = launcher.poll() is None
        output, _ = launcher.communicate(timeout=RUN_SECONDS + 150)
    finally:
        stop_launcher(launcher, run)
    assert launcher.returncode == 0, output[-3000:]
    return seen


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _status_output(run: Path) -> tuple[int, str]:
    """Exit status and output of `ddmd-stream status RUN`, on a console wide enough that no
    task name or state wraps."""
    import contextlib
    import io
    import os
    from unittest import mock

    text = io.StringIO()
    with mock.patch.dict(os.environ, COLUMNS="200"), contextlib.redirect_stdout(text):
        code = cli_main(["status", str(run)])
    return code, text.getvalue()


def _state(run: Path, task: str) -> str | None:
    """The state `ddmd-stream status` prints for `task` (the cell after its name)."""
    code, output = _status_output(run)
    assert code == 0, output
    cells = next((line.split("│") for line in output.splitlines() if f" {task} " in line), [])
    return cells[2].strip() if len(cells) > 2 else None


def test_live_page_exists_and_reloads_while_the_run_goes(live_run: dict) -> None:
    assert live_run["mid_run_page"] and live_run["launcher_running"]
    assert live_run["sim_running"]  # `status` on a running run


def test_last_page_stops_reloading_and_shows_every_figure(live_run: dict) -> None:
    report = live_run["run"] / "report"
    page = (report / "index.html").read_text()
    assert "http-equiv='refresh'" not in page and "The run has ended" in page
    for name in [*FIGURES, FRAMES_FIGURE]:
        assert (report / name).stat().st_size > 0 and f"src='{name}?v=" in page
    assert not (report / ".live").exists()
    assert "restarts from outliers" in page and "aggregator-0000" in page


def test_status_of_a_finished_run(live_run: dict) -> None:
    run = live_run["run"]
    assert {_state(run, task) for task in ("sim-0000", "aggregator-0000", "agent-0000")} == {
        "done"}
    output = _status_output(run)[1]
    assert "frames aggregated" in output and "restarts from outliers" in output


def test_status_of_no_run_dir_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["status", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_final_report_still_written_over_the_live_page(live_run: dict, tmp_path: Path) -> None:
    run = Path(shutil.copytree(live_run["run"], tmp_path / "run"))
    assert cli_main(["report", str(run)]) == 0
    page = (run / "report" / "index.html").read_text()
    assert "Live page" not in page and "The run has ended" not in page
    assert all(f"src='{name}'" in page for name in FIGURES)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine "
                    "(apt-get install -y chromium) to load the live page in")
def test_live_page_in_a_headless_browser(live_run: dict) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed "
                                   "(pip install -e .[test])")
    page_file = live_run["run"] / "report" / "index.html"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1500})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(page_file.as_uri(), wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'),"
                                   " i.complete && i.naturalWidth > 0])")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
        finally:
            browser.close()
    assert not problems, problems
    assert len(images) == len(FIGURES) + 1 and all(loaded for _, loaded in images), images
    assert SCREENSHOT.stat().st_size > 10_000


# --------------------------------------------------------------------------- the Monitor


def test_monitor_keeps_ticking_through_failed_writes_and_ticks(
    make_config, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(workflow={"live_page_s": None})
    run = RunDir(config.workflow.run_dir)
    run.tasks_dir.mkdir(parents=True)
    (run.status_file / "in-the-way").mkdir(parents=True)  # status.json cannot be replaced
    monitor = Monitor(run, config, time.time(), time.time() + 300, interval_s=0.02, live=False)
    caplog.set_level(logging.WARNING, logger=progress.__name__)
    monitor.start()
    try:
        assert wait_for(lambda: monitor.ticks >= 5)  # ticks go on though every write fails
        assert monitor.failures >= 5 and monitor.is_alive()
        assert sum("cannot write" in r.getMessage() for r in caplog.records) == 1  # logged once
        shutil.rmtree(run.status_file)
        assert wait_for(run.status_file.is_file)

        real, calls = progress.summarize, []

        def failing_summarize(*args, **kwargs):  # the fault injected: three ticks raise
            calls.append(1)
            if len(calls) <= 3:
                raise RuntimeError("injected")
            return real(*args, **kwargs)

        run.status_file.unlink()
        monkeypatch.setattr(progress, "summarize", failing_summarize)
        assert wait_for(lambda: len(calls) > 3 and run.status_file.is_file())
        assert monitor.is_alive()
        assert any("injected" in r.getMessage() for r in caplog.records)
    finally:
        monitor.stop()
    assert not monitor.is_alive()


# --------------------------------------------------------------------------- incremental reads


def test_event_tail_returns_each_complete_line_once(tmp_path: Path) -> None:
    from ddmd_stream.report.tail import EventTail

    run = RunDir(tmp_path)
    events = run.task_dir("sim", 0) / "events.jsonl"
    events.parent.mkdir(parents=True)
    tail = EventTail(run)
    assert tail.read_new() == []
    events.write_text('{"t": 1, "event": "a"}\n{"t": 2, "ev')  # the second line is torn
    assert [e["event"] for e in tail.read_new()] == ["a"]
    with open(events, "a") as out:
        out.write('ent": "b"}\nnot json\n{"t": 3, "event": "c"}\n')
    assert [e["event"] for e in tail.read_new()] == ["b", "c"]
    assert tail.read_new() == []
    later = run.task_dir("agent", 0) / "events.jsonl"  # a task that starts later is picked up
    later.parent.mkdir(parents=True)
    later.write_text('{"t": 4, "event": "d"}\n')
    assert [e["event"] for e in tail.read_new()] == ["d"]
