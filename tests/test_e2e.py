"""End to end through RADICAL-EnTK: the whole loop on this machine, over SST and over BP5 only."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import BP5_XML, SST_XML, start_launcher, stop_launcher, tiny_run, wait_for

from ddmd_stream.accounting import account_run
from ddmd_stream.catalog import OutlierCatalog
from ddmd_stream.events import read_run_events
from ddmd_stream.ml.registry import latest_version
from ddmd_stream.rundir import RunDir
from ddmd_stream.streams import read_store
from ddmd_stream.workflow.cleanup import find_leftovers

RADICAL_IMPORT_WARNING = "Import `radical` modules before `logging`"


def restarted_from_catalog(run: Path) -> bool:
    return any(e["event"] == "restart" for e in read_run_events(run))


@pytest.mark.parametrize("xml", [SST_XML, BP5_XML], ids=["sst", "bp5"])
def test_workflow_through_entk(tmp_path: Path, xml: Path) -> None:
    run = tmp_path / "run"
    started = time.monotonic()
    launcher = start_launcher(tiny_run(run, xml), tmp_path / "config.yaml")
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
    assert RADICAL_IMPORT_WARNING not in output  # launch.configure_logging imports radical first

    stored = read_store(run / "stream" / "agg-0000.bp", ["sim_id"])
    assert set(stored["sim_id"].tolist()) == {0, 1}
    assert latest_version(run / "model") is not None
    assert OutlierCatalog(run / "catalog" / "outliers.pkl").load().version >= 1
    assert find_leftovers(run) == []
    for row in account_run(RunDir(run)):  # a clean stop drains every stream: nothing lost
        assert (row.stored, row.duplicates, row.missing) == (row.streamed, 0, 0), row
