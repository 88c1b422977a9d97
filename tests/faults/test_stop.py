"""Stopping a run in different phases (startup, training) leaves no process of it behind."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import SST_XML, start_launcher, stop_launcher, tiny_run, wait_for
from test_faults import FAULT_RUN

from ddmd_stream.workflow.cleanup import find_leftovers


def launch(tmp_path: Path) -> tuple[Path, subprocess.Popen]:
    run = tmp_path / "run"
    launcher = start_launcher(tiny_run(run, SST_XML, **FAULT_RUN), tmp_path / "config.yaml")
    return run, launcher


def trainer_is_training(run: Path) -> bool:
    try:
        status = json.loads((run / "tasks" / "trainer-0000" / "status.json").read_text())
    except (OSError, ValueError):
        return False
    return status.get("state") == "training"


@pytest.mark.parametrize("phase", ["startup", "training"])
def test_signal_stops_everything(tmp_path: Path, phase: str) -> None:
    run, launcher = launch(tmp_path)
    try:
        if phase == "startup":
            assert wait_for(lambda: (run / "tasks").exists(), timeout_s=30)
            launcher.send_signal(signal.SIGINT)  # Ctrl-C before the tasks run
        else:
            assert wait_for(lambda: trainer_is_training(run), timeout_s=240, interval_s=1)
            launcher.send_signal(signal.SIGTERM)
        output, _ = launcher.communicate(timeout=180)
    finally:
        stop_launcher(launcher, run)
    assert "Traceback" not in output, output[-3000:]
    assert (run / "STOP").exists()
    assert wait_for(lambda: find_leftovers(run) == [], timeout_s=20), find_leftovers(run)
