"""Stopping a run in different phases (startup, training) leaves no process of it behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture
def own_signal_handlers() -> Iterator[None]:
    """The launcher installs SIGINT/SIGTERM handlers; give pytest its own back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.usefixtures("own_signal_handlers")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_preparing_stops_before_any_task(
    make_config: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, sig: signal.Signals
) -> None:
    """Ctrl-C in the middle of writing the run directory: it is finished, then nothing starts."""
    from ddmd_stream import launch
    from ddmd_stream.workflow import prepare as preparing

    real_prepare = preparing.prepare

    def interrupted_prepare(*args: Any) -> Any:
        os.kill(os.getpid(), sig)  # the fault: the signal arrives while preparing
        return real_prepare(*args)

    monkeypatch.setattr(preparing, "prepare", interrupted_prepare)
    config = make_config()
    assert launch.execute(config) == (130 if sig == signal.SIGINT else 143)
    run = Path(config.workflow.run_dir)
    assert (run / "STOP").read_text().startswith(f"signal {sig.name} while preparing")
    assert (run / "config.yaml").is_file()  # the run directory was written whole
    assert not list((run / "tasks").glob("*/events.jsonl"))  # no task ever ran
