"""Stops that always finish; cleanup kills only the run's processes; task exit codes; `ls`.

The hung task is an injected fault: a tiny script (and a child of it) ignoring SIGTERM,
SIGINT and STOP, put in the launcher's plan in place of the real tasks.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from conftest import SST_XML, stop_launcher, tiny_run, wait_for

from ddmd_stream.rundir import RunDir
from ddmd_stream.task import EXIT_BAD_INPUT, EXIT_RUNTIME_FAULT
from ddmd_stream.workflow.cleanup import find_leftovers, kill_leftovers, record_process
from ddmd_stream.workflow.escalate import KILL_GRACE_S

MARGIN_S = 30  # STOP seen (monitor tick 2 s), task reaped, wind-up; ~3 s idle, 14 s loaded
ALANINE = Path(__file__).resolve().parents[2] / "ddmd_stream/data/alanine-dipeptide-c7eq.pdb"
IGNORE = ("import signal, time\n"
          "for sig in (signal.SIGTERM, signal.SIGINT): signal.signal(sig, signal.SIG_IGN)\n")
# the fault: ignores SIGTERM/SIGINT/STOP, and so does its child; says "pids" once set up
HUNG_TASK = IGNORE + """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", IGNORE + "open('child', 'w').close()\\n"
                          "time.sleep(3600)"])
while not os.path.exists("child"):
    time.sleep(0.05)
with open("pids.tmp", "w") as out:
    out.write(f"{os.getpid()} {child.pid}")
os.replace("pids.tmp", "pids")
time.sleep(3600)
""".replace("IGNORE", repr(IGNORE))
# the launcher with its plan replaced by the hung task
LAUNCHER = """
import sys
from ddmd_stream import launch
from ddmd_stream.workflow import prepare as preparing
from ddmd_stream.workflow.plan import TaskPlan, TaskSpec
real_prepare = preparing.prepare

def hung_plan(*args):
    plan = real_prepare(*args)
    workdir = plan.run_dir / "tasks" / "hung-0000"
    return TaskPlan([TaskSpec("hung", 0, sys.executable, ["-c", HUNG_TASK], workdir)],
                    plan.run_dir)

preparing.prepare = hung_plan
raise SystemExit(launch.main(sys.argv[1:]))
""".replace("HUNG_TASK", repr(HUNG_TASK))


def launch_hung(tmp_path: Path, duration_s: float, grace_s: float) -> tuple[Path, Any]:
    """The launcher (local engine) running only the hung task."""
    run, config_file = tmp_path / "run", tmp_path / "config.yaml"
    config = tiny_run(run, SST_XML, workflow={"engine": "local", "duration_s": duration_s,
                                              "stop_grace_s": grace_s, "live_page_s": None},
                      simulation={"pdb_file": str(ALANINE), "platform": "Reference",
                                  "num_simulations": 1})
    config_file.write_text(yaml.safe_dump(config))
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(config_file)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return run, launcher


def hung_pids(run: Path) -> list[int]:
    pids = run / "tasks" / "hung-0000" / "pids"
    assert wait_for(pids.exists, timeout_s=60), "the hung task never started"
    return [int(pid) for pid in pids.read_text().split()]


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def assert_all_gone(run: Path, pids: list[int]) -> None:
    assert [pid for pid in pids if running(pid)] == []
    assert find_leftovers(run) == []


def test_hung_task_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    """Wall time → STOP; the task ignores it and SIGTERM; SIGKILL ends it, the launcher returns."""
    grace_s = 2.0
    run, launcher = launch_hung(tmp_path, duration_s=3, grace_s=grace_s)
    try:
        pids = hung_pids(run)
        assert wait_for((run / "STOP").exists, timeout_s=30)
        stopped = time.monotonic()
        output, _ = launcher.communicate(timeout=grace_s + KILL_GRACE_S + 60)
        seconds = time.monotonic() - stopped
    finally:
        stop_launcher(launcher, run)
    print(f"STOP → launcher returned: {seconds:.1f} s (grace {grace_s} s + kill "
          f"{KILL_GRACE_S} s)", file=sys.__stderr__)
    assert seconds < grace_s + KILL_GRACE_S + MARGIN_S, output[-3000:]
    assert seconds > grace_s, "escalated before the grace period ended"
    assert "tasks still running 2 s after STOP" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert_all_gone(run, pids)


def test_second_ctrl_c_escalates_at_once(tmp_path: Path) -> None:
    """Ctrl-C writes STOP (the grace period is 10 min); a second Ctrl-C stops the task now."""
    import signal

    run, launcher = launch_hung(tmp_path, duration_s=600, grace_s=600)
    try:
        pids = hung_pids(run)
        launcher.send_signal(signal.SIGINT)
        assert wait_for((run / "STOP").exists, timeout_s=30)
        launcher.send_signal(signal.SIGINT)
        forced = time.monotonic()
        output, _ = launcher.communicate(timeout=KILL_GRACE_S + 60)
        seconds = time.monotonic() - forced
    finally:
        stop_launcher(launcher, run, grace_s=5)
    print(f"second Ctrl-C → launcher returned: {seconds:.1f} s", file=sys.__stderr__)
    assert seconds < KILL_GRACE_S + MARGIN_S, output[-3000:]
    assert "stopping the tasks now" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert_all_gone(run, pids)


# --------------------------------------------------------------------------- cleanup


def test_cleanup_spares_a_recycled_pid(tmp_path: Path, processes: list) -> None:
    """A recorded pid now used by another process (other start time) is left alone."""
    task_dir = RunDir(tmp_path / "run").task_dir("sim", 0)
    ours, stranger = (subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                       start_new_session=True) for _ in range(2))
    processes.extend([ours, stranger])
    record_process(task_dir, ours.pid)
    started = psutil.Process(stranger.pid).create_time()
    with open(task_dir / "processes.jsonl", "a") as record:  # as if it had been recycled
        record.write(f'{{"pid": {stranger.pid}, "create_time": {started - 1000}}}\n')
    assert [p.pid for p in find_leftovers(tmp_path / "run")] == [ours.pid]
    assert kill_leftovers(tmp_path / "run", grace_s=1) == [ours.pid]
    assert ours.wait(5) is not None
    assert stranger.poll() is None


# --------------------------------------------------------------------------- exit codes

FAULTS = {  # what main raises → exit status, traceback in the log?
    "runtime": ("RuntimeError('publish failed: disk gone')", EXIT_RUNTIME_FAULT, True),
    "dead writer": ("WriterDied('agg-0.bp: writer (pid 1) is gone')", EXIT_RUNTIME_FAULT, True),
    "bad input": ("ConfigError('x.yaml: agent.eps: must be > 0; set it to 0.5')",
                  EXIT_BAD_INPUT, False),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_task_exit_status_tells_fault_from_bad_input(
    make_config: Callable[..., Any], fault: str
) -> None:
    from ddmd_stream.workflow.prepare import prepare

    raised, status, traceback = FAULTS[fault]
    config = make_config()
    run = RunDir(prepare(config, time.time()).run_dir)
    script = ("import sys\nfrom ddmd_stream.config import ConfigError\n"
              "from ddmd_stream.streams.errors import WriterDied\n"
              "from ddmd_stream.task import run_task\n"
              f"def main(ctx):\n    raise {raised}\n"
              "raise SystemExit(run_task('sim', main, sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", script, "-c", str(run.task_file("sim", 0))],
                          capture_output=True, text=True, timeout=120)
    log = (run.task_dir("sim", 0) / "log").read_text()
    assert done.returncode == status, done.stderr[-2000:]
    assert ("Traceback" in log) is traceback, log
    assert raised.split("'")[1] in log


# --------------------------------------------------------------------------- streams ls

BP4_WRITER = """
import os, sys
import numpy as np
from adios2 import bindings
adios = bindings.ADIOS()
io = adios.DeclareIO("w")
io.SetEngine("BP4")
x = io.DefineVariable("x", np.zeros((3, 4)), [3, 4], [0, 0], [3, 4])
engine = io.Open(sys.argv[1], bindings.Mode.Write)
for step in range(2):
    engine.BeginStep()
    engine.Put(x, np.full((3, 4), float(step)))
    engine.EndStep()
os._exit(0)  # the writer dies without closing the store
"""


def test_ls_lists_a_bp4_store_whose_writer_exited(tmp_path: Path) -> None:
    store = tmp_path / "agg-0.bp"
    subprocess.run([sys.executable, "-c", BP4_WRITER, str(store)], check=True, timeout=60)
    started = time.monotonic()
    listed = subprocess.run([sys.executable, "-m", "ddmd_stream.streams", "ls", str(store)],
                            capture_output=True, text=True, timeout=90)
    seconds = time.monotonic() - started
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert listed.stdout.split()[:2] == ["x", "float64"], listed.stdout
    assert "steps      2  frames 6" in listed.stdout, listed.stdout
    print(f"ls of a BP4 store whose writer died: {seconds:.1f} s", file=sys.__stderr__)
    assert seconds < 30, f"ls took {seconds:.1f} s"  # ~1.5 s; was: waited > 60 s (BP5 reader)
