"""Stops that always finish: after STOP, the tasks get a grace period, then signals.

Once `RUN/STOP` exists (wall time, a target, a person's STOP file, Ctrl-C), the tasks have
`workflow.stop_grace_s` to exit by themselves. Then the run's task processes still alive
(`cleanup.find_leftovers` without RADICAL's) get SIGTERM and, `KILL_GRACE_S` later, SIGKILL;
the engine sees them end and, STOP being there, restarts none.
This goes on until the engine returns (an engine may start a task late). RADICAL's own
processes are left to the engine (killing them leaves EnTK's AppManager waiting forever);
after it returned, the launcher stops whatever of the run is left (`cleanup.kill_leftovers`).
`force()` (a second Ctrl-C) skips the grace period.
"""

from __future__ import annotations

import logging
import threading

from ddmd_stream.rundir import RunDir
from ddmd_stream.workflow.cleanup import kill_leftovers

logger = logging.getLogger(__name__)

KILL_GRACE_S = 5.0  # SIGTERM → SIGKILL


class StopEscalation(threading.Thread):
    """Background thread: STOP → grace → SIGTERM → SIGKILL of what is left of the tasks."""

    def __init__(self, run: RunDir, grace_s: float, kill_grace_s: float = KILL_GRACE_S,
                 poll_s: float = 0.5):
        super().__init__(name="ddmd-stop-escalation", daemon=True)
        self.run_dir = run
        self.grace_s, self.kill_grace_s = grace_s, kill_grace_s
        self.poll_s = poll_s
        self.killed: list[int] = []  # pids the escalation stopped
        self._forced, self._finished = threading.Event(), threading.Event()
        self._wake = threading.Event()  # set by force() and finish()

    def force(self) -> None:
        """Escalate now (without waiting for the grace period)."""
        self._forced.set()
        self._wake.set()

    def finish(self) -> None:
        """The engine has returned: nothing more to escalate."""
        self._finished.set()
        self._wake.set()
        self.join(timeout=self.kill_grace_s + 5)

    def run(self) -> None:
        if not self._wait_for_stop():
            return
        waited = self._grace()
        if waited == "finished":
            return
        after = "a second signal" if waited == "forced" else f"{self.grace_s:.0f} s"
        logger.warning("tasks still running %s after STOP: SIGTERM, SIGKILL %.0f s later",
                       after, self.kill_grace_s)
        while not self._finished.is_set():  # again and again: an engine may start one late
            self._signal_tasks()
            self._finished.wait(self.kill_grace_s)

    def _wait_for_stop(self) -> bool:
        """Wait until STOP exists or force(); False when finish() came first."""
        while not self._finished.is_set():
            if self._forced.is_set() or self.run_dir.stop_file.exists():
                return True
            self._wake.wait(self.poll_s)
            self._wake.clear()
        return False

    def _grace(self) -> str:
        """Wait the grace period: "waited" it out, "forced" or "finished" before its end."""
        if not (self._forced.is_set() or self._finished.is_set()):
            self._wake.wait(self.grace_s)
        if self._finished.is_set():
            return "finished"
        return "forced" if self._forced.is_set() else "waited"

    def _signal_tasks(self) -> None:
        killed = kill_leftovers(self.run_dir.root, self.kill_grace_s, radical=False)
        self.killed.extend(killed)
        if killed:
            logger.warning("stopped %d process(es) of the run: %s", len(killed), killed)
