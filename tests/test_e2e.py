"""End to end through RADICAL-EnTK: the whole loop on this machine, over SST and over BP5 only."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import BP5_XML, SST_XML, stop_launcher, wait_for

from ddmd_stream.catalog import OutlierCatalog
from ddmd_stream.ml.registry import latest_version
from ddmd_stream.profile.events import read_run_events
from ddmd_stream.streams import read_store
from ddmd_stream.workflow.cleanup import find_leftovers

FAST_RUN = {
    "workflow": {"engine": "entk", "duration_s": 240, "heartbeat_s": 1},
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
        "model": {"conv_filters": [8, 8, 8, 8], "dense_units": 16},
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


def restarted_from_catalog(run: Path) -> bool:
    return any(e["event"] == "restart" for e in read_run_events(run))


@pytest.mark.parametrize("xml", [SST_XML, BP5_XML], ids=["sst", "bp5"])
def test_workflow_through_entk(tmp_path: Path, xml: Path) -> None:
    run = tmp_path / "run"
    config = {
        **FAST_RUN,
        "workflow": {**FAST_RUN["workflow"], "run_dir": str(run)},
        "streams": {**FAST_RUN["streams"], "adios_xml": str(xml)},
    }
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    launcher = subprocess.Popen(
        [sys.executable, "-m", "ddmd_stream.launch", str(config_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_for(lambda: restarted_from_catalog(run), timeout_s=220, interval_s=2), (
            "no simulation restarted from a catalog outlier"
        )
        (run / "STOP").write_text("test done\n")
        output, _ = launcher.communicate(timeout=120)
    finally:
        stop_launcher(launcher, run)
    elapsed = time.monotonic() - started
    assert launcher.returncode == 0, output[-3000:]
    assert elapsed < 300

    stored = read_store(run / "stream" / "agg-0000.bp", ["sim_id"])
    assert set(stored["sim_id"].tolist()) == {0, 1}
    assert latest_version(run / "model") is not None
    assert OutlierCatalog(run / "catalog" / "outliers.pkl").load().version >= 1
    assert find_leftovers(run) == []
