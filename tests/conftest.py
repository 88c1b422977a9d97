"""Shared test set-up: ADIOS2 on loopback, shipped XML paths, fast run configs, process cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

# SST advertises the first non-loopback interface unless told otherwise; the shipped XML says
# NetworkInterface=lo, and this keeps every process the tests start on loopback as well.
os.environ.setdefault("ADIOS2_IP", "127.0.0.1")

REPO = Path(__file__).resolve().parent.parent
SST_XML = REPO / "adios_xml" / "sst.xml"
BP5_XML = REPO / "adios_xml" / "bp5.xml"

# A whole workflow in minutes: 2 tiny FS-peptide simulations (20 frames per segment over
# 0.002 ns), one aggregator, a light CVAE and an agent with a small outlier band.
TINY_RUN: dict[str, Any] = {
    # the live page has tests of its own (test_live.py); elsewhere it would only cost CPU
    "workflow": {"engine": "entk", "duration_s": 240, "heartbeat_s": 1, "live_page_s": None},
    "simulation": {
        "num_simulations": 2,
        "platform": "CPU",
        "cpu_threads": 1,
        "seed": 7,
        "report_interval_ps": 0.2,
        "segment_length_ns": 0.002,
    },
    "aggregation": {"flush_interval_s": 0.3},
    "training": {
        "min_samples": 30,
        "epochs": 2,
        "batch_size": 16,
        "cvae": {"conv_filters": [8, 8, 8, 8], "dense_units": 16},
    },
    "agent": {
        "min_samples": 30,
        "outlier_band": [2, 20],
        "n_outliers": 10,
        "cycle_interval_s": 2,
        "eps": 0.5,
        "dbscan_min_samples": 4,
    },
    "streams": {"open_timeout_s": 120},
}


def tiny_run(run_dir: Path, xml: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """TINY_RUN in `run_dir` over the ADIOS XML `xml`, with `sections` merged in."""
    extra = {"workflow": {"run_dir": str(run_dir)}, "streams": {"adios_xml": str(xml)}}
    return _merge(_merge(TINY_RUN, extra), sections)


def start_launcher(config: dict[str, Any], config_file: Path, **popen: Any) -> subprocess.Popen:
    """Write `config` to `config_file`; start `python -m ddmd_stream.launch` on it.

    Output goes to a text pipe unless `popen` says otherwise (e.g. stdout=a log file)."""
    config_file.write_text(yaml.safe_dump(config))
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, **popen}
    return subprocess.Popen([sys.executable, "-m", "ddmd_stream.launch", str(config_file)],
                            **options)


def wait_for(
    predicate: Callable[[], bool], timeout_s: float = 30.0, interval_s: float = 0.1
) -> bool:
    """Poll `predicate` until it is true (True) or `timeout_s` passed (False)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Any]:
    """`make_config(section={field: value}, ...)`: a small, fast RunConfig in tmp_path."""
    from ddmd_stream.config import parse_config

    base = {
        "workflow": {
            "run_dir": str(tmp_path / "run"),
            "engine": "local",
            "duration_s": 30,
            "heartbeat_s": 1.0,
            "live_page_s": None,
        },
        "simulation": {
            "num_simulations": 2,
            "platform": "CPU",
            "cpu_threads": 1,
            "report_interval_ps": 0.5,
            "segment_length_ns": 0.005,
            "seed": 1,
        },
        "streams": {"adios_xml": str(SST_XML), "open_timeout_s": 60, "liveness_timeout_s": 5},
    }

    def make(**sections: dict[str, Any]) -> Any:
        return parse_config(_merge(base, sections), "<test config>", tmp_path)

    return make


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts (each in its own session); any still running are killed after."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                process.kill()
            process.wait(timeout=10)


def stop_launcher(launcher: subprocess.Popen, run_dir: Path, grace_s: float = 90.0) -> None:
    """End a launcher a test started, whatever state it is in, and everything of its run."""
    from ddmd_stream.workflow.cleanup import kill_leftovers

    if launcher.poll() is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "STOP").write_text("test cleanup\n")
        try:
            launcher.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait()
    kill_leftovers(run_dir, grace_s=2)
