"""Frame accounting: ledgers, the table, `verify`; clean stops lose nothing; runs resume from
checkpoints after a kill -9 of everything without streaming any frame identity twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SST_XML, start_launcher, tiny_run, wait_for

from ddmd_stream.accounting import (
    FrameLedger,
    SimAccount,
    account,
    account_run,
    attempts,
    frame_keys,
    frames_of,
    last_recorded,
    read_ledger,
)
from ddmd_stream.rundir import RunDir
from ddmd_stream.workflow.cleanup import find_leftovers


def test_ledger_and_account_count_every_case(tmp_path: Path) -> None:
    path = tmp_path / "frames.ledger"
    first = FrameLedger(path)
    first.record_many([(0, 10), (0, 20), (0, 30)])
    first.close()
    second = FrameLedger(path)  # a second attempt (process start)
    second.record_many([(1, 40), (1, 50)])
    second.close()
    with open(path, "ab") as out:
        out.write(b"\x01\x02\x03")  # a torn record from a kill mid-write
    records = read_ledger(path)
    assert len(frames_of(records)) == 5 and len(attempts(records)) == 2
    assert last_recorded(path) == (1, 50)

    # stored: 10 twice, 20 lost between stored frames, 30 and 40 stored, 50 in flight at a kill,
    # and (0, 35) stored though not in the ledger
    stored = [(0, 10), (0, 10), (0, 30), (1, 40), (0, 35)]
    keys = frame_keys(np.array([s for s, _ in stored]), np.array([t for _, t in stored]))
    row = account(3, records, keys)
    assert row == SimAccount(3, streamed=5, stored=5, duplicates=1, missing=2, in_flight=1,
                             unlisted=1)
    assert not row.ok(in_flight_allowed=1)  # the duplicate and the gap remain
    clean = account(3, records, frame_keys(np.array([0, 0, 0, 1]), np.array([10, 20, 30, 40])))
    assert clean.missing == clean.in_flight == 1 and clean.ok(1) and not clean.ok(0)


PLAIN = {"workflow": {"engine": "local", "mode": "plain", "duration_s": 400},
         "simulation": {"segment_length_ns": 0.004}}


def verify(run: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ddmd_stream.streams", "verify", str(run),
                           *options], capture_output=True, text=True, timeout=120)


def ledger_steps(run: Path, sim_id: int) -> np.ndarray:
    return frames_of(read_ledger(RunDir(run).sim_ledger(sim_id)))["step"]


def streamed_more(run: Path, than: dict[int, int], frames: int = 8) -> bool:
    return all(len(ledger_steps(run, i)) >= than.get(i, 0) + frames for i in (0, 1))


def run_until_streamed(run: Path, launcher: subprocess.Popen, than: dict[int, int]) -> str:
    """Let the run stream a few more frames per simulation, then STOP it; its output."""
    assert wait_for(lambda: streamed_more(run, than) or launcher.poll() is not None,
                    timeout_s=240, interval_s=0.5)
    (run / "STOP").write_text("test: enough frames\n")
    output, _ = launcher.communicate(timeout=240)
    assert launcher.returncode == 0, output
    assert streamed_more(run, than), output
    return output


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain run (simulations and aggregator) that ended at its wall time."""
    root = tmp_path_factory.mktemp("accounting")
    run = root / "run"
    launcher = start_launcher(tiny_run(run, SST_XML, **PLAIN), root / "config.yaml")
    run_until_streamed(run, launcher, {})
    return run


def test_clean_stop_stores_every_streamed_frame_once(stopped_run: Path) -> None:
    rows = account_run(RunDir(stopped_run))
    assert [row.sim_id for row in rows] == [0, 1]
    for row in rows:
        assert row.streamed > 5
        assert (row.stored, row.duplicates, row.missing, row.unlisted) == (row.streamed, 0, 0, 0)
    result = verify(stopped_run)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK:" in result.stdout


def test_verify_flags_a_lost_frame(stopped_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(stopped_run, copy, symlinks=True)
    ledger = FrameLedger(RunDir(copy).sim_ledger(1))
    ledger.record(999, 10**9)  # a frame the stores never got
    ledger.close()
    result = verify(copy)
    assert result.returncode == 1 and "LOSS" in result.stderr
    assert verify(copy, "--allow-in-flight", "1").returncode == 0  # it is the last one


def test_kill_everything_then_resume_continues_without_repeats(stopped_run: Path) -> None:
    run = stopped_run
    before = {i: ledger_steps(run, i) for i in (0, 1)}
    config = run.parent / "config.yaml"
    counts = {i: len(steps) for i, steps in before.items()}
    launcher = subprocess.Popen([sys.executable, "-m", "ddmd_stream.launch", str(config),
                                 "--resume"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    grew = wait_for(lambda: streamed_more(run, counts, 5), timeout_s=240, interval_s=0.5)
    os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and ...
    for process in find_leftovers(run):  # ... every task, at once (a walltime kill)
        os.kill(process.pid, signal.SIGKILL)
    launcher.wait(timeout=30)
    assert grew, "the resumed simulations did not stream"
    assert wait_for(lambda: not find_leftovers(run), timeout_s=20)

    killed = {i: len(ledger_steps(run, i)) for i in (0, 1)}
    third = subprocess.Popen([sys.executable, "-m", "ddmd_stream.launch", str(config),
                              "--resume"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    output = run_until_streamed(run, third, killed)
    assert "resumed from the checkpoint" in "".join(
        (run / "tasks" / f"sim-000{i}" / "log").read_text() for i in (0, 1)), output
    for sim_id in (0, 1):
        steps = ledger_steps(run, sim_id)
        assert np.all(np.diff(steps) > 0), f"sim {sim_id}: a step streamed twice or went back"
    # in flight at the kill: the SST queue (adios_xml/sst.xml QueueLimit 8) and what the
    # aggregator held between two flushes (0.3 s of frames)
    result = verify(run, "--allow-in-flight", "16")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = account_run(RunDir(run))
    assert all(row.duplicates == 0 and row.missing == row.in_flight for row in rows), rows


def test_report_has_the_accounting_table_and_the_jobs(stopped_run: Path) -> None:
    from ddmd_stream.report.load import load_run
    from ddmd_stream.report.metrics import summarize
    from ddmd_stream.report.render import markdown_page

    summary = summarize(load_run(stopped_run))
    jobs = (stopped_run / "jobs.jsonl").read_text().splitlines()
    assert len(summary["jobs"]) == len(jobs) >= 1
    assert [row["sim_id"] for row in summary["accounting"]] == [0, 1]
    assert summary["accounting"] == [
        row.__dict__ for row in account_run(RunDir(stopped_run))]
    page = markdown_page(summary)
    assert "## Frame accounting" in page
    assert ("jobs (launches)" in page) == (len(jobs) > 1)
