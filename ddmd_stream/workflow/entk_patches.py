"""Guarded patches of RADICAL-EnTK 1.103 internals where no config knob exists.

Each patch checks that the attribute it wraps exists and logs a warning instead when EnTK's
internals changed. `throttle_polling`: sleeps in EnTK's two busy loops; `idle_getters`: EnTK's
queue readers pause after an empty answer; `start_task_manager_early`: EnTK's task manager
starts while the pilot boots (docs/scaling.md "RADICAL-EnTK start-up").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

# Sleep added to EnTK's busy polling loops (see throttle_polling).
POLL_INTERVAL_S = 0.2
# Pause of an EnTK queue reader after an empty answer (see idle_getters).
GETTER_IDLE_S = 0.1


def throttle_polling(appman, interval_s: float = POLL_INTERVAL_S) -> None:
    """Put sleeps into EnTK's two busy loops (radical.entk 1.103: ~1 core of the client).

    AppManager._run_workflow polls pipeline states without sleeping; it calls the resource
    manager's `get_resource_allocation_state` once per round, so that getter (of this
    AppManager only) sleeps first. WFprocessor._enqueue calls `_create_workload` in a loop
    without sleeping; the class method is wrapped (once per process) to sleep when there
    is nothing to enqueue.
    """
    rmgr = getattr(appman, "_rmgr", None)
    getter = getattr(rmgr, "get_resource_allocation_state", None)
    if getter is None:
        logger.warning("cannot throttle AppManager polling (radical.entk internals changed)")
    else:

        def throttled_state():
            time.sleep(interval_s)
            return getter()

        rmgr.get_resource_allocation_state = throttled_state
    _throttle_enqueue(interval_s)


def _throttle_enqueue(interval_s: float) -> None:
    from radical.entk.appman import wfprocessor

    _sleep_when_idle(wfprocessor.WFprocessor, "_create_workload", interval_s,
                     lambda result: not result[0], "EnTK's enqueue loop", "radical.entk")


def _sleep_when_idle(cls: type | None, name: str, sleep_s: float, idle: Callable[[Any], bool],
                     what: str, package: str) -> None:
    """Wrap `cls.name` (once per process) to sleep `sleep_s` after a call whose result is
    `idle`; `what` and `package` name the loop in the warning given when it is missing."""
    original = getattr(cls, name, None)
    if original is None:
        logger.warning("cannot throttle %s (%s internals changed)", what, package)
        return
    if getattr(original, "_ddmd_idle", False):
        return

    def sleeping_when_idle(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if idle(result):
            time.sleep(sleep_s)
        return result

    sleeping_when_idle._ddmd_idle = True
    setattr(cls, name, sleeping_when_idle)


def idle_getters(idle_s: float = GETTER_IDLE_S) -> None:
    """Readers of EnTK's in-process queue pause `idle_s` after an empty answer (once per process).

    EnTK's synchronizer, dequeuer and task manager threads each read the launcher's queue
    bridge in a loop whose answer comes at once when there is nothing (~100 round trips a
    second together, most of the launcher's CPU). Only `get_nowait` of interactive getters
    changes: RADICAL-Pilot's client reads through callbacks, and its bridges are processes of
    their own (radical_patches.py).
    """
    import radical.utils as ru

    _sleep_when_idle(getattr(ru.zmq, "Getter", None), "get_nowait", idle_s,
                     lambda msgs: not msgs, "EnTK's queue readers", "radical.utils")


def start_task_manager_early(appman, poll_s: float = POLL_INTERVAL_S) -> None:
    """Let EnTK build its task manager while the pilot boots (radical.entk 1.103: ~3.5 s).

    ResourceManager.submit_resource_request submits the pilot, then waits until it is active;
    only then does AppManager.run start the task manager (3 bridges and 3 components, one
    after another). RADICAL-Pilot queues tasks for a pilot that is not active yet, so the
    wait goes to a thread: the call returns once the pilot is submitted (or raises what the
    submission raised). A pilot that fails later is seen by AppManager's state polling.
    """
    rmgr = getattr(appman, "_rmgr", None)
    submit = getattr(rmgr, "submit_resource_request", None)
    if submit is None or not hasattr(rmgr, "_pilot"):
        logger.warning("cannot start EnTK's task manager early (radical.entk internals changed)")
        return

    def submit_without_waiting() -> None:
        before, errors = rmgr._pilot, []

        def submit_and_wait() -> None:
            try:
                submit()
            except BaseException as error:  # handed to the caller, or logged
                errors.append(error)
                if rmgr._pilot is not before:
                    logger.error("pilot start failed: %s", error)

        thread = threading.Thread(target=submit_and_wait, name="ddmd-pilot-wait", daemon=True)
        thread.start()
        while thread.is_alive() and rmgr._pilot is before:
            thread.join(poll_s)
        if errors and rmgr._pilot is before:
            raise errors[0]

    rmgr.submit_resource_request = submit_without_waiting
