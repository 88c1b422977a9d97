"""Tests of the RADICAL-EnTK engine: a real run on local.localhost with tiny tasks, restarts,
cleanup of leftover processes, RADICAL resource settings and the HPC launch presets."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ddmd_stream.config import ResourcesConfig, load_config, repository_root
from ddmd_stream.workflow.cleanup import find_leftovers, kill_leftovers, record_process
from ddmd_stream.workflow.entk import entk_name, exit_code_of, run_entk
from ddmd_stream.workflow.plan import TaskPlan, TaskSpec
from ddmd_stream.workflow.resources import (
    UNUSED_AGENT_BRIDGES,
    check_resources,
    local_resource_json,
    pilot_description,
    write_radical_config,
)

logger = logging.getLogger(__name__)

# argv: marker file, how many first attempts fail, seconds to sleep, task.yaml (unused; names
# the run dir like a real task's `-c RUN/tasks/<task>/task.yaml`)
TASK_SCRIPT = """
import os, pathlib, sys, time
marker, failures, seconds = pathlib.Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
attempt = len(marker.read_text().splitlines()) if marker.exists() else 0
start = time.time()
print("attempt", attempt, "of", os.environ.get("DDMD_TASK"), flush=True)
time.sleep(seconds)
with marker.open("a") as out:
    env = os.environ
    out.write(f"{start} {time.time()} {os.getcwd()} {env.get('PRE_EXEC_RAN')} {env['TMPDIR']}\\n")
sys.exit(1 if attempt < failures else 0)
"""
# role, index, failures of the first attempts[, seconds]; with max_restarts=1 the agent fails
# for good; the aggregator outlives the others' first attempts (restarts happen meanwhile)
TASKS = [("aggregator", 0, 0, 8), ("sim", 0, 0), ("sim", 1, 1), ("trainer", 0, 0), ("agent", 0, 2)]
MAX_RESTARTS = 1


def _spec(run_dir: Path, role: str, index: int, failures: int, seconds: float = 3) -> TaskSpec:
    workdir = run_dir / "tasks" / f"{role}-{index:04d}"
    marker = run_dir / "markers" / f"{role}-{index:04d}.txt"
    return TaskSpec(role=role, index=index, executable=sys.executable,
                    arguments=["-c", TASK_SCRIPT, str(marker), str(failures), str(seconds),
                               str(workdir / "task.yaml")],
                    workdir=workdir, pre_exec=["export PRE_EXEC_RAN=yes"],
                    environment={"DDMD_TASK": f"{role}-{index:04d}"})


def _plan(run_dir: Path, tasks: list[tuple] = TASKS) -> TaskPlan:
    (run_dir / "markers").mkdir(parents=True)
    return TaskPlan([_spec(run_dir, *task) for task in tasks], run_dir)


def _intervals(marker: Path) -> list[tuple[float, float, str, str, str]]:
    """(start, end, cwd, PRE_EXEC_RAN, TMPDIR) of each attempt of a task."""
    rows = [line.split() for line in marker.read_text().splitlines()]
    return [(float(r[0]), float(r[1]), r[2], r[3], r[4]) for r in rows]


# --------------------------------------------------------------------------- a real EnTK run


@pytest.fixture(scope="module")
def entk_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One EnTK run of the five tiny tasks (shared by the tests below: it takes ~30 s)."""
    run_dir = tmp_path_factory.mktemp("entk") / "run"
    plan = _plan(run_dir)
    events: list[tuple[str, dict]] = []
    t0 = time.time()
    states = run_entk(plan, ResourcesConfig(), MAX_RESTARTS, lambda n, d: events.append((n, d)))
    t1 = time.time()
    markers = {spec.name: _intervals(run_dir / "markers" / f"{spec.name}.txt")
               for spec in plan.tasks}
    leftovers = [p.pid for p in find_leftovers(run_dir)]
    first_start = min(rows[0][0] for rows in markers.values())
    engine_start = next(d["time"] for n, d in events if n == "engine_start")
    last_end = max(rows[-1][1] for rows in markers.values())
    print(f"EnTK timing: run() → first task running {first_start - engine_start:.1f} s, "
          f"total {t1 - t0:.1f} s, last task end → run_entk returned {t1 - last_end:.1f} s",
          file=sys.__stderr__)  # uncaptured: the figure shows in CI logs
    return {"plan": plan, "states": states, "events": events, "markers": markers,
            "leftovers": leftovers, "run_dir": run_dir}


@pytest.mark.timeout(300)
def test_all_tasks_ran_at_once_in_their_workdirs(entk_run: dict) -> None:
    plan, markers = entk_run["plan"], entk_run["markers"]
    firsts = [rows[0] for rows in markers.values()]
    assert max(start for start, *_ in firsts) < min(end for _, end, *_ in firsts), firsts
    for spec in plan.tasks:
        for _, _, cwd, pre_exec, tmpdir in markers[spec.name]:
            assert Path(cwd).resolve() == spec.workdir.resolve()
            assert pre_exec == "yes"
            assert tmpdir == (os.environ.get("TMPDIR") or tempfile.gettempdir())
        stdout = (spec.workdir / "stdout").read_text()
        assert f"of {spec.name}" in stdout  # environment reached the task, stdout in workdir


@pytest.mark.timeout(300)
def test_failed_task_is_restarted_up_to_the_limit(entk_run: dict) -> None:
    states, markers, events = entk_run["states"], entk_run["markers"], entk_run["events"]
    assert states == {"aggregator-0000": "DONE", "sim-0000": "DONE", "sim-0001": "DONE",
                      "trainer-0000": "DONE", "agent-0000": "FAILED"}
    assert len(markers["sim-0001"]) == 2 and len(markers["agent-0000"]) == 1 + MAX_RESTARTS
    assert len(markers["sim-0000"]) == 1
    assert markers["sim-0001"][1][0] < markers["aggregator-0000"][0][1]  # restarted at once
    restarts = [d for n, d in events if n == "task_restart"]
    assert sorted(d["task"] for d in restarts) == ["agent-0000", "sim-0001"]
    assert all(d["code"] == 1 for d in restarts)
    sim1 = entk_run["plan"].tasks[2].workdir
    assert "attempt 0" in (sim1 / "stdout.0").read_text()  # failed attempt's log kept
    assert "attempt 1" in (sim1 / "stdout").read_text()


@pytest.mark.timeout(300)
def test_no_leftovers_and_radical_files_in_run_dir(entk_run: dict) -> None:
    run_dir = entk_run["run_dir"]
    assert entk_run["leftovers"] == []
    radical = run_dir / "radical"
    sid = next(d["session"] for n, d in entk_run["events"] if n == "engine_start")
    assert (radical / sid / "pmgr_launching.0000.log").is_file()  # RADICAL-Pilot client
    agent_cfg = radical / "radical.pilot.sandbox" / sid / "pilot.0000" / "agent_0.cfg"
    # the lighter agent (resources.agent_config) and RADICAL's profilers off by default
    assert not set(json.loads(agent_cfg.read_text())["bridges"]) & set(UNUSED_AGENT_BRIDGES)
    if "RADICAL_PROFILE" not in os.environ:  # bootstrap_0.sh starts its own in any case
        assert {p.name for p in radical.rglob("*.prof")} <= {"bootstrap_0.prof"}
    # nothing of this session outside the run dir: cwd, $HOME/.radical, /tmp
    home = Path(os.environ.get("HOME", "/nonexistent"))
    for outside in (Path.cwd(), home / ".radical" / "utils", Path(tempfile.gettempdir())):
        assert not (outside / sid).exists(), outside


@pytest.mark.timeout(300)
def test_role_pipelines_restart_once_the_role_is_done(tmp_path: Path) -> None:
    """group="role": one pipeline per role; EnTK runs post_exec when the whole stage is done,
    so the failed sim restarts only after its sibling ended (why "task" is the default)."""
    plan = _plan(tmp_path / "run", [("sim", 0, 0, 8), ("sim", 1, 1, 1), ("agent", 0, 0, 1)])
    events: list[tuple[str, dict]] = []
    states = run_entk(plan, ResourcesConfig(), 2, lambda n, d: events.append((n, d)),
                      group="role")
    assert set(states.values()) == {"DONE"}
    markers = {s.name: _intervals(tmp_path / "run" / "markers" / f"{s.name}.txt")
               for s in plan.tasks}
    assert len(markers["sim-0001"]) == 2 and len(markers["sim-0000"]) == 1
    assert markers["sim-0001"][1][0] > markers["sim-0000"][0][1]  # restart after sibling's end
    assert [d["task"] for n, d in events if n == "task_restart"] == ["sim-0001"]
    assert find_leftovers(tmp_path / "run") == []


# --------------------------------------------------------------------------- cleanup


def test_kill_leftovers_stops_run_processes_only(tmp_path: Path) -> None:
    run_dir, other = tmp_path / "run", tmp_path / "run2"
    (run_dir / "tasks" / "sim-0000").mkdir(parents=True)
    (run_dir / "radical").mkdir()
    other.mkdir()
    stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(60)")
    procs = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                         cwd=run_dir / "tasks" / "sim-0000", start_new_session=True),
        subprocess.Popen([sys.executable, "-c", stubborn, str(run_dir / "radical" / "x.json")],
                         start_new_session=True, stdout=subprocess.PIPE, text=True),
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(other)],
                         cwd=other, start_new_session=True),
    ]
    record_process(run_dir / "tasks" / "sim-0000", procs[0].pid)  # a task; [1]: RADICAL's
    try:
        assert procs[1].stdout.readline().strip() == "ready"  # its SIGTERM handler is set
        killed = kill_leftovers(run_dir, grace_s=1)
        assert sorted(killed) == sorted(p.pid for p in procs[:2])
        assert [p.wait(5) is not None for p in procs[:2]] == [True, True]
        assert procs[2].poll() is None
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_kill_leftovers_spares_self_and_ancestors(tmp_path: Path) -> None:
    """A process whose parent (this test) runs inside the run dir kills neither."""
    script = ("import sys; from pathlib import Path; from ddmd_stream.workflow.cleanup import "
              "kill_leftovers; print(kill_leftovers(Path(sys.argv[1]), grace_s=1))")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- resources


def _tiny_plan(run_dir: Path, gpus: int = 0) -> TaskPlan:
    tasks = [TaskSpec("sim", i, "python", [], run_dir / f"sim-{i}", cpus=2, gpus=gpus)
             for i in range(3)]
    return TaskPlan(tasks, run_dir)


def test_local_config_fits_all_tasks_and_stays_in_run_dir(tmp_path: Path) -> None:
    plan = _tiny_plan(tmp_path, gpus=1)
    resources = ResourcesConfig()
    env = write_radical_config(tmp_path / "radical", resources, plan)
    override = tmp_path / "radical/.radical/pilot/configs/resource_local.json"
    written = json.loads(override.read_text())
    assert written["localhost"]["cores_per_node"] == 6
    assert written["localhost"]["gpus_per_node"] == 3
    assert written["localhost"]["default_remote_workdir"] == str((tmp_path / "radical").resolve())
    assert env["RADICAL_DEFAULT_IFACE"] == "lo"
    assert env["RADICAL_UTILS_NTPHOST"] == "127.0.0.1"
    root = str((tmp_path / "radical").resolve())
    assert env["RADICAL_CONFIG_USER_DIR"] == env["RADICAL_BASE"] == root
    for base in ("radical", "radical/radical.pilot.sandbox"):
        assert (tmp_path / base / ".radical/utils/ntp.cache").is_file()
    desc = pilot_description(resources, plan)
    assert desc == {"resource": "local.localhost", "walltime": 30, "cpus": 6, "gpus": 3,
                    "access_schema": "local", "job_name": "ddmd_stream"}
    assert local_resource_json(4, 0)["localhost"]["cores_per_node"] == 4
    assert check_resources(resources, plan) == []


def test_hpc_problems_are_reported(tmp_path: Path) -> None:
    plan = _tiny_plan(tmp_path, gpus=2)
    resources = ResourcesConfig(resource="ornl.summit", access_schema="local", nodes=1,
                                cores_per_node=4, gpus_per_node=4, network_interface="lo")
    problems = "\n".join(check_resources(resources, plan))
    for needle in ("resources.project", "6 cores", "6 GPUs", "network_interface"):
        assert needle in problems
    resources = ResourcesConfig(resource="ornl.summit", project="ABC123", queue="batch", nodes=2,
                                cores_per_node=42, gpus_per_node=6, network_interface="ib0")
    assert check_resources(resources, plan) == []
    desc = pilot_description(resources, plan)
    assert (desc["cpus"], desc["gpus"]) == (84, 12)
    assert (desc["project"], desc["queue"]) == ("ABC123", "batch")


@pytest.mark.parametrize("machine", ["summit", "lassen", "frontier", "polaris", "perlmutter"])
def test_launch_presets_load(machine: str) -> None:
    config = load_config(repository_root() / "launch" / f"{machine}.yaml")
    res = config.resources
    assert not res.resource.startswith("local.") and res.queue and res.cores_per_node
    assert res.gpus_per_node > 0 and res.walltime_min >= 10
    problems = check_resources(res, _tiny_plan(Path("/nonexistent")))
    assert [p for p in problems if not p.startswith("resources.project")] == []


def test_names_and_exit_codes() -> None:
    spec = TaskSpec("sim", 3, "python", [], Path("/x"))
    assert entk_name(spec) == "sim.0003"

    class Failed:
        exception_detail = "exit code: 7"

    assert exit_code_of(Failed()) == 7


def test_radical_session_gives_the_root_logger_its_handlers_back(tmp_path: Path) -> None:
    """Closing a RADICAL logger strips the root's handlers; the launcher's end must still log."""
    import radical.utils as ru

    from ddmd_stream.workflow.entk import radical_session

    handler = logging.StreamHandler()
    root = logging.getLogger()
    pytest_handlers, root.handlers = root.handlers, [handler]  # as after logging.basicConfig
    try:
        with radical_session(tmp_path / "radical", {"RADICAL_DEFAULT_IFACE": "lo"}):
            log = ru.Logger("ddmd.test", path=str(tmp_path), targets=["null"], level="INFO")
            log.info("a session's log")  # RADICAL attaches its handlers at the first message
            log.close()  # as at a session's end
            assert root.handlers == []
        assert root.handlers == [handler]
    finally:
        root.handlers = pytest_handlers
