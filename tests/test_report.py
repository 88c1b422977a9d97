"""The run report (`python -m ddmd_stream.report`) on synthetic run directories.

The events mimic what the tasks record (same names and fields), with round numbers so the
table and I/O shares can be checked exactly; the store is a real BP5 store.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ddmd_stream.config import parse_config, save_config
from ddmd_stream.report import FIGURES
from ddmd_stream.report.__main__ import main
from ddmd_stream.report.load import frame_wall_times, task_intervals
from ddmd_stream.report.metrics import EVENT_COST_US, published_rounds
from ddmd_stream.streams import FrameWriter

ROOT = Path(__file__).parents[1]
XML = ROOT / "adios_xml" / "bp5.xml"
T0 = 1_700_000_000.0
HOUR = 3600.0
OUTPUTS = ["table.md", "table.csv", "io.md", "summary.json", "report.md", "index.html",
           *FIGURES]


def _write_events(run: Path, task: str, events: list[dict[str, Any]], torn: bool = False) -> None:
    folder = run / "tasks" / task
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"task": task, **e}) for e in events]
    text = "\n".join(lines) + "\n" + ('{"t": 17000000, "task": "' if torn else "")
    (folder / "events.jsonl").write_text(text)


def _start(t: float = T0) -> dict[str, Any]:
    return {"t": t, "event": "task_start", "role": "x", "pid": 1}


def _end(t: float = T0 + HOUR) -> dict[str, Any]:
    return {"t": t, "event": "task_end", "code": 0}


def sim_events(finished: bool) -> list[dict[str, Any]]:
    """4 segments of 900 s (9 s ADIOS put each), restarts between them, in one hour."""
    events = [_start(), {"t": T0 + 0.5, "event": "platform", "platform": "CPU"}]
    for i in range(4):
        events.append({"t": T0 + 900 * i, "event": "segment", "dur": 900.0, "segment": i,
                       "steps": 1000, "md_s": 890.0, "reporter_s": 1.0, "put_s": 9.0,
                       "ns": 0.002})
        if i < 3:
            events.append({"t": T0 + 900 * (i + 1), "event": "restart", "segment": i + 1,
                           "source_sim": 0, "source_step": 100, "rmsd": 2.0,
                           "model_version": 1})
    if finished:
        events += [{"t": T0 + HOUR, "event": "stream_closed", "frames": 40, "bytes": 4000},
                   _end()]
    return events


def aggregator_events() -> list[dict[str, Any]]:
    """10 polls (1 s each) and 10 writes of 8 frames (0.5 s each)."""
    events = [_start()]
    for i in range(10):
        events.append({"t": T0 + 300 * i + 1, "event": "read", "batches": 8, "dur": 1.0})
        events.append({"t": T0 + 300 * i + 2, "event": "write", "dur": 0.5, "frames": 8})
    closing = {"t": T0 + HOUR, "event": "aggregated", "frames": 80, "bytes": 8000, "put_s": 4.0}
    return [*events, closing, _end()]


def trainer_events() -> list[dict[str, Any]]:
    """6 rounds of 500 s after a 2 s read each; a model published after rounds 1, 2 and 4."""
    events = [_start()]
    for i in range(6):
        start = T0 + 600 * i
        events.append({"t": start, "event": "read", "dur": 2.0, "new": 50})
        events.append({"t": start + 10, "event": "train_round", "dur": 500.0, "round": i + 1,
                       "samples": 100, "loss": 100.0 / (i + 1), "val_loss": 110.0 / (i + 1),
                       "baseline": float("inf") if i == 0 else 1.0, "epochs": 2,
                       "rss_mb": 700.0})
        if i in (0, 1, 3):
            events.append({"t": start + 511, "event": "publish_model", "dur": 1.0,
                           "version": i + 1})
    return [*events, _end()]


def agent_events() -> list[dict[str, Any]]:
    """12 cycles of 60 s, 5 outliers each, after a 1 s read each; every cycle publishes."""
    events = [_start()]
    for i in range(12):
        start = T0 + 300 * i
        events.append({"t": start, "event": "read", "dur": 1.0, "new": 8})
        events.append({"t": start + 1, "event": "cycle", "dur": 60.0, "cycle": i + 1,
                       "frames": 80, "outliers": 5, "min_rmsd": 1.0 - 0.01 * i,
                       "model_version": 1, "eps": 0.2 + 0.01 * i, "catalog_version": i + 1})
        events.append({"t": start + 50, "event": "publish_catalog", "dur": 0.1, "records": 5,
                       "version": i + 1})
    return [*events, _end()]


def write_store(path: Path) -> None:
    rng = np.random.default_rng(0)
    with FrameWriter(XML, "AggregatorOutput", path) as writer:
        for step in range(10):
            writer.write({"rmsd": rng.uniform(1, 5, 8).astype(np.float32),
                          "sim_id": np.arange(8, dtype=np.int64) % 2,
                          "step": np.full(8, step, dtype=np.int64)})


def make_run(run: Path, finished: bool = True, with_config: bool = True,
             with_store: bool = True) -> Path:
    _write_events(run, "sim-0000", sim_events(True))
    _write_events(run, "sim-0001", sim_events(finished), torn=not finished)
    _write_events(run, "aggregator-0000", aggregator_events())
    _write_events(run, "trainer-0000", trainer_events())
    _write_events(run, "agent-0000", agent_events(), torn=True)
    if with_config:
        config = parse_config({
            "workflow": {"run_dir": str(run)},
            "simulation": {"num_simulations": 2, "report_interval_ps": 0.2,
                           "segment_length_ns": 0.002, "timestep_fs": 2.0},
            "resources": {"sim": {"cpus": 2, "gpus": 1}, "trainer": {"cpus": 4, "gpus": 1},
                          "agent": {"cpus": 3}},
        })
        save_config(config, run / "config.yaml")
    if with_store:
        write_store(run / "stream" / "agg-0000.bp")
    return run


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run")


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "table.csv") as stream:
        return {row["component"]: row for row in csv.DictReader(stream)}


def test_every_output_is_written(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(finished_run)]) == 0
    out = finished_run / "report"
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    for name in FIGURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"src='{name}'" in (out / "index.html").read_text()
        assert f"]({name})" in (out / "report.md").read_text()
    assert "finished run" in capsys.readouterr().out


def test_table_matches_the_events(finished_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    assert main([str(finished_run), "--out", str(out)]) == 0
    rows = _rows(out)
    assert list(rows) == ["Simulation", "Aggregator", "Training", "Agent"]
    sim, agg, train, agent = rows.values()
    assert (int(sim["tasks"]), int(sim["iterations"])) == (2, 8)
    assert float(sim["per_hour"]) == pytest.approx(4.0)
    assert float(sim["mean_s"]) == pytest.approx(900.0)
    assert float(sim["samples"]) == pytest.approx(10.0)  # 1000 steps / 100 steps per frame
    assert float(sim["busy"]) == pytest.approx(1.0)
    assert sim["cpu_gpu"] == "2;1"
    assert float(agg["per_hour"]) == pytest.approx(10.0)
    assert float(agg["samples"]) == pytest.approx(8.0)
    assert agg["cpu_gpu"] == "1;0"
    assert float(train["per_hour"]) == pytest.approx(6.0)
    assert float(train["samples"]) == pytest.approx(100.0)
    assert train["cpu_gpu"] == "4;1"
    assert float(agent["per_hour"]) == pytest.approx(12.0)
    assert float(agent["outliers"]) == pytest.approx(5.0)
    assert agent["cpu_gpu"] == "3;0"
    markdown = (out / "table.md").read_text()
    assert "| Simulation | 2 | 8 | 900 | 4.0 |" in markdown


def test_io_shares_equal_adios_time_over_task_time(finished_run: Path) -> None:
    assert main([str(finished_run)]) == 0
    summary = json.loads((finished_run / "report" / "summary.json").read_text())
    io = summary["io"]
    adios = 8 * 9.0 + 10 * 1.0 + 10 * 0.5 + 6 * 2.0 + 12 * 1.0
    assert io["task_s"] == pytest.approx(5 * HOUR)
    assert io["adios_s"] == pytest.approx(adios)
    assert io["io_share_all"] == pytest.approx(adios / (5 * HOUR))
    assert 0 < io["io_share_all"] < 1
    assert io["io_share_sim"] == pytest.approx(72.0 / 7200.0)
    assert (io["segments"], io["restarts"]) == (8, 6)
    assert (io["sim_frames_streamed"], io["sim_bytes_streamed"]) == (80, 8000)
    assert io["aggregated_frames"] == 80
    assert io["store_bytes_on_disk"] > 0
    assert summary["state"] == "finished"
    assert 0 < summary["recorder"]["share"] <= summary["recorder"]["worst_task_share"] < 1
    assert summary["recorder"]["us_per_event"] == EVENT_COST_US  # nothing timed at report time


def test_partial_run_with_torn_lines_and_missing_files(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", finished=False, with_config=False, with_store=False)
    assert main([str(run)]) == 0
    out = run / "report"
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"].startswith("partial")
    assert summary["io"]["segments"] == 8  # the torn line lost nothing else
    assert summary["io"]["sim_bytes_streamed"] is None  # sim-0001 has not closed its stream
    assert summary["io"]["sim_frames_streamed"] is None  # and frames per segment are unknown
    assert _rows(out)["Simulation"]["cpu_gpu"] == "n/a"
    assert any("config.yaml missing" in note for note in summary["notes"])
    assert "no aggregated frames" in (out / "report.md").read_text()


def test_running_simulation_counts_frames_from_its_segments(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", finished=False, with_store=False)
    assert main([str(run)]) == 0
    io = json.loads((run / "report" / "summary.json").read_text())["io"]
    assert io["sim_frames_streamed"] == 40 + 4 * 10  # closed stream + 4 segments of 10 frames
    assert io["sim_bytes_streamed"] is None


def test_run_with_no_events_yet(tmp_path: Path) -> None:
    (tmp_path / "run" / "tasks").mkdir(parents=True)
    assert main([str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "report" / "timeline.png").stat().st_size > 0


@pytest.mark.parametrize("make", ["missing", "not a run"])
def test_bad_dir_exits_2_with_one_line(tmp_path: Path, make: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nothing"
    if make == "not a run":
        path.mkdir()
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(path) in err


def test_task_intervals_split_restarted_task() -> None:
    events = [_start(0.0), {"t": 5.0, "event": "segment", "dur": 5.0}, _end(10.0),
              _start(20.0), {"t": 21.0, "event": "segment", "dur": 4.0}]
    assert task_intervals(events) == [(0.0, 10.0), (20.0, 25.0)]


def test_frame_wall_times_follow_writes() -> None:
    writes = [{"t": 10.0, "dur": 1.0, "frames": 2}, {"t": 20.0, "dur": 0.0, "frames": 3}]
    assert frame_wall_times(6, writes).tolist() == [11.0, 11.0, 20.0, 20.0, 20.0, 20.0]


def test_published_rounds_pick_the_round_before_the_publish() -> None:
    rounds = [e for e in trainer_events() if e["event"] == "train_round"]
    publishes = [e for e in trainer_events() if e["event"] == "publish_model"]
    assert [r for r, _ in published_rounds(rounds, publishes)] == [1, 2, 4]


def test_event_cost_is_measured() -> None:
    """benchmarks/event_overhead.py measures what the report's constant stands for."""
    spec = importlib.util.spec_from_file_location("event_overhead",
                                                  ROOT / "benchmarks" / "event_overhead.py")
    assert spec is not None and spec.loader is not None
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    assert 0 < benchmark.measure_event_cost(2000) < 1000  # µs per event
    assert 0 < EVENT_COST_US < 1000
