"""Stop processes a run left behind, and only those: the run's own task processes and RADICAL.

Every task process is recorded when it starts (`record_process`: pid and start time, in
`RUN/tasks/<task>/processes.jsonl`): by the local engine when it starts it, and by the task
itself (`task.run_task`, which covers EnTK). A process belongs to the run when a record names
its pid *and* start time (a recycled pid of another process has another start time), or it
descends from such a process, or it is a RADICAL component (its command line names
`RUN/radical/` or its working directory is inside it) or descends from one. Of the RADICAL
components, only processes without a controlling terminal (RADICAL starts them in new
sessions) or descended from the current process count: a person's shell opened there is left
alone. The current process and its ancestors are never touched.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import psutil

from ddmd_stream.rundir import RunDir
from ddmd_stream.workflow.resources import radical_root

logger = logging.getLogger(__name__)

PROCESS_RECORD = "processes.jsonl"
# psutil derives start times from clock ticks since boot: equal to well under this
SAME_START_S = 0.05


def record_process(task_dir: Path, pid: int) -> None:
    """Append process `pid` with its start time to the task's record (see the module doc)."""
    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        return  # already gone: nothing to clean up
    try:
        task_dir.mkdir(parents=True, exist_ok=True)
        with open(task_dir / PROCESS_RECORD, "a") as record:  # one short line: atomic append
            record.write(json.dumps({"pid": pid, "create_time": created}) + "\n")
    except OSError as error:
        logger.warning("cannot record process %d in %s: %s", pid, task_dir, error)


def _records(run_dir: Path) -> Iterator[tuple[int, float]]:
    for path in RunDir(run_dir).tasks_dir.glob(f"*/{PROCESS_RECORD}"):
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                entry = json.loads(line)
                yield int(entry["pid"]), float(entry["create_time"])
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash mid-write


def _recorded_process(pid: int, created: float) -> psutil.Process | None:
    """The process `pid` if it is still the one recorded (same start time)."""
    try:
        proc = psutil.Process(pid)
        return proc if abs(proc.create_time() - created) < SAME_START_S else None
    except psutil.Error:
        return None


def recorded_processes(run_dir: Path) -> list[psutil.Process]:
    """The run's recorded task processes still alive."""
    found = {}
    for pid, created in _records(run_dir):
        proc = _recorded_process(pid, created)
        if proc is not None:
            found[pid] = proc
    return list(found.values())


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _mentions(cmdline: str, root: str) -> bool:
    """`root` appears in `cmdline` as a whole path or path prefix (not /run in /run2)."""
    return re.search(re.escape(root) + r"(?=$|[/\s'\":;,)=])", cmdline) is not None


def _protected() -> set[int]:
    """The current process and its ancestors."""
    me = psutil.Process()
    return {me.pid, *(p.pid for p in me.parents())}


def _descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def belongs_to_run(proc: psutil.Process, roots: list[str], ours: set[int] | None = None) -> bool:
    """True when `proc` is a RADICAL component under one of `roots` (see the module doc)."""
    try:
        if proc.pid not in (ours or set()) and proc.terminal() is not None:
            return False
        cmdline = " ".join(proc.cmdline())
        if any(_mentions(cmdline, root) for root in roots):
            return True
        cwd = proc.cwd()
        return any(_inside(cwd, root) for root in roots)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
        return False


def _roots(folder: Path) -> list[str]:
    """`folder` as given and resolved (symlinks), without duplicates."""
    roots = {str(folder.absolute()), str(folder.resolve())}
    return sorted(root.rstrip(os.sep) or os.sep for root in roots)


def radical_processes(run_dir: Path) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """RADICAL's components of the run (under RUN/radical/), and the other processes they
    started (the tasks its agent runs, recorded or not, and their launch scripts)."""
    if not radical_root(Path(run_dir)).exists():
        return [], []  # not an EnTK run: spare the walk over every process
    roots = _roots(radical_root(Path(run_dir)))
    ours = {p.pid for p in _descendants(psutil.Process())}
    components = [p for p in psutil.process_iter() if belongs_to_run(p, roots, ours)]
    pids = {p.pid for p in components}
    started = [child for p in components for child in _descendants(p) if child.pid not in pids]
    return components, started


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def find_leftovers(run_dir: Path, radical: bool = True) -> list[psutil.Process]:
    """The run's processes still alive: recorded tasks and their descendants, and with
    `radical` RADICAL's processes and all they started; never this process or its ancestors.

    Without `radical`, only the tasks: RADICAL's components start helpers (bridges, queues)
    that do not name the run directory, and they are the engine's to stop."""
    tasks = recorded_processes(run_dir)
    found = {p.pid: p for p in tasks}
    if radical:
        components, started = radical_processes(run_dir)
        found.update((p.pid, p) for p in [*components, *started])
    for task in tasks:
        found.update((child.pid, child) for child in _descendants(task))
    protected = _protected()
    return [p for pid, p in sorted(found.items()) if pid not in protected and _alive(p)]


def _signal_all(procs: list[psutil.Process], kill: bool) -> list[psutil.Process]:
    sent = []
    for proc in procs:
        try:
            if kill:
                proc.kill()
            else:
                proc.terminate()
            sent.append(proc)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            sent.append(proc)  # already gone: counts as stopped
        except psutil.AccessDenied:
            logger.warning("not allowed to signal leftover process %d", proc.pid)
    return sent


def kill_leftovers(run_dir: Path, grace_s: float = 5, radical: bool = True) -> list[int]:
    """SIGTERM the run's leftover processes (`find_leftovers`), SIGKILL those alive after
    `grace_s`; their pids."""
    procs = find_leftovers(run_dir, radical)
    if not procs:
        return []
    for proc in procs:
        logger.info("stopping leftover process %d: %s", proc.pid, _describe(proc))
    sent = _signal_all(procs, kill=False)
    _, alive = psutil.wait_procs(sent, timeout=grace_s)
    if alive:
        logger.warning("SIGKILL to %d process(es) alive after %.0f s", len(alive), grace_s)
        psutil.wait_procs(_signal_all(alive, kill=True), timeout=grace_s)
    return sorted(p.pid for p in sent if not _alive(p))


def _describe(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())[:200]
    except (psutil.Error, OSError):
        return "?"
