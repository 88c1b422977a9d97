"""Stop processes a run left behind (EnTK/RADICAL-Pilot orphan tasks after an unclean end).

A process belongs to the run when its command line names the run directory (our tasks get
`-c RUN/tasks/<task>/task.yaml`, RADICAL components get configs under `RUN/radical/`) or its
working directory is inside the run directory (task sandboxes are). Of those, only processes
without a controlling terminal (RADICAL and the local engine start tasks in new sessions) or
descended from the current process are stopped: a person's `tail -f RUN/...` or a shell opened
in the run directory has a terminal and is left alone. The current process and its ancestors
are never touched.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _mentions(cmdline: str, root: str) -> bool:
    """`root` appears in `cmdline` as a whole path or path prefix (not /run in /run2)."""
    return re.search(re.escape(root) + r"(?=$|[/\s'\":;,)=])", cmdline) is not None


def _protected() -> set[int]:
    """The current process and its ancestors."""
    me = psutil.Process()
    return {me.pid, *(p.pid for p in me.parents())}


def _descendants() -> set[int]:
    try:
        return {p.pid for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return set()


def belongs_to_run(proc: psutil.Process, roots: list[str], ours: set[int] | None = None) -> bool:
    """True when `proc` is one of the run's processes to stop (see the module doc)."""
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


def _roots(run_dir: Path) -> list[str]:
    """The run directory as given and resolved (symlinks), without duplicates."""
    roots = {str(run_dir.absolute()), str(run_dir.resolve())}
    return sorted(root.rstrip(os.sep) or os.sep for root in roots)


def find_leftovers(run_dir: Path) -> list[psutil.Process]:
    """Processes of the run still alive, excluding this process and its ancestors."""
    roots, protected, ours = _roots(run_dir), _protected(), _descendants()
    return [
        p
        for p in psutil.process_iter()
        if p.pid not in protected and belongs_to_run(p, roots, ours)
    ]


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


def kill_leftovers(run_dir: Path, grace_s: float = 5) -> list[int]:
    """SIGTERM the run's leftover processes, SIGKILL those alive after `grace_s`; their pids."""
    procs = find_leftovers(run_dir)
    if not procs:
        return []
    for proc in procs:
        logger.info("stopping leftover process %d: %s", proc.pid, _describe(proc))
    sent = _signal_all(procs, kill=False)
    _, alive = psutil.wait_procs(sent, timeout=grace_s)
    if alive:
        logger.warning("SIGKILL to %d process(es) alive after %.0f s", len(alive), grace_s)
        psutil.wait_procs(_signal_all(alive, kill=True), timeout=grace_s)
    return sorted(p.pid for p in sent if not p.is_running() or _is_zombie(p))


def _is_zombie(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _describe(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())[:200]
    except (psutil.Error, OSError):
        return "?"
