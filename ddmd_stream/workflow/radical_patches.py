"""Guarded patches of RADICAL-Pilot 1.103 / radical.utils 1.103 inside RADICAL's own processes.

RADICAL-Pilot runs every bridge and component as a Python process of its own. They reach this
module through `ddmd_stream/data/radical_site/sitecustomize.py`, which the launcher puts on
`PYTHONPATH` for an EnTK run (workflow/resources.py `radical_env`; `DDMD_RADICAL_TUNING=0`
turns it off) and which calls `install_for(program)` in processes started as `radical-pilot-*`.
The launcher calls `install_for("launcher")` itself. Each patch checks what it wraps and logs a
warning instead when RADICAL's internals changed (docs/scaling.md "RADICAL-EnTK start-up").

- `long_poll_queues`: a queue bridge answers a `get` from an idle queue at once with nothing,
  so every component input ping-pongs with its bridge ~100 times a second (~2 % of a core per
  process pair). The bridge now holds such a request until a message comes or `HOLD_S` passed.
  Only in bridge processes: EnTK's in-process queue serves several threads with several queue
  names through one getter that waits without a timeout, which a held request would stall.
  (Answering at once but without RADICAL's 10 ms polls and sleep was tried for EnTK's bridges:
  its getters then asked as fast as they were answered, 27 % of a core.)
- `long_poll_proxy_queue`: the session's proxy (a fork of the launcher serving the
  `proxy_*` channels) runs a queue bridge that the task manager's output stager and the agent
  poll the same way (measured: that fork 2.3 % of a core, `rp.tmgr_staging_output` 1.9 %); its
  fork now long-polls like a bridge process (nothing else of EnTK runs in it).
- `slow_idle_pubsubs`, `quiet_pipe_listeners`: pubsub bridges and pipe listeners wake every
  10 ms to check for their stop flag; every `IDLE_S` now (messages are forwarded or handled
  the moment they come either way). In every process.
- `parallel_process_starts`: `ComponentManager` starts bridges and components one after
  another, each `radical-pilot-*` call waiting ~0.45 s for the new process to import
  radical.pilot; the calls now start at once and are waited for together.
- `slow_process_watchers`: every RADICAL process checks 20 times a second whether its parent
  still lives (ru.PWatcher); every `WATCH_S` now.
- `coarse_component_timers`: a component's timed callbacks (the agent's and the launcher's
  RADICAL client) wake every 10 ms to see whether they are due; every `TIMER_TICK_S` now.
- `slow_idle_agent_loops`: the agent's executor looks at its running tasks every 50 ms and
  its scheduler process (a fork of the scheduling component) at its queues every 0.1 s when
  idle (measured: 0.7-0.8 % of a core each); every `AGENT_IDLE_S` now. A task that ends is
  noticed, and one that arrives is scheduled, up to that much later.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import ModuleType

logger = logging.getLogger(__name__)

# Longest a queue bridge holds a get request on an empty queue (RADICAL's getters wait 200 or
# 500 ms for an answer before asking again).
HOLD_S = 0.5
# How often an idle pubsub bridge looks at its stop flag (RADICAL: 10 ms).
IDLE_S = 0.1
# How often a RADICAL process checks that the processes it watches live (RADICAL: 50 ms).
WATCH_S = 0.5
# Shortest sleep of radical.pilot.utils.component (its timed callbacks poll with 10 ms).
TIMER_TICK_S = 0.1
# Idle sleep of the agent's task watcher (RADICAL: 50 ms) and scheduler loop (RADICAL: 0.1 s).
AGENT_IDLE_S = 0.3

_pending: dict[str, Callable[[ModuleType], None]] = {}  # module -> patch, not yet imported
_done: set[str] = set()


def install_for(program: str) -> None:
    """The patches for `program` (`radical-pilot-bridge`, another `radical-pilot-*` program, or
    "launcher"): applied to the modules already imported, the others as they get imported."""
    patches = BRIDGE_PATCHES if program == "radical-pilot-bridge" else START_PATCHES
    for name, patch in patches.items():
        if name in _done or name in _pending:
            continue
        if name in sys.modules:
            _apply(name, patch, sys.modules[name])
        else:
            _pending[name] = patch
    if _pending and not any(isinstance(f, _PatchingFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchingFinder())


def _apply(name: str, patch: Callable[[ModuleType], None], module: ModuleType) -> None:
    _done.add(name)
    try:
        patch(module)
    except Exception:  # never break RADICAL over a patch
        logger.warning("could not patch %s (RADICAL internals changed?)", name, exc_info=True)


class _PatchingFinder(importlib.abc.MetaPathFinder):
    """Runs the pending patch of a module right after the module is executed."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _pending:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader, execute = spec.loader, spec.loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            execute(module)
            _apply(fullname, _pending.pop(fullname), module)

        loader.exec_module = exec_and_patch
        return spec


# --- queue bridges -------------------------------------------------------------------------


def long_poll_queues(module: ModuleType) -> None:
    """radical.utils.zmq.queue.Queue._bridge_work, with empty answers held back (see HOLD_S)."""
    queue_cls = module.Queue
    _require(queue_cls, "_bridge_work", "_bridge_initialize")
    _require(module, "no_intr", "from_msgpack", "to_msgpack", "as_string")
    queue_cls._bridge_work = _long_poll_bridge_work


def _long_poll_bridge_work(self) -> None:
    import zmq
    from radical.utils.zmq import queue as q

    both = zmq.Poller()
    both.register(self._put, zmq.POLLIN)
    both.register(self._get, zmq.POLLIN)
    self.nin, self.nout, self.last = 0, 0, 0
    buf: dict[str, list] = {}
    held, deadline = None, 0.0  # the qname of the request we have not answered yet
    try:
        while not self._term.is_set():
            if held is None:
                events = dict(q.no_intr(both.poll, timeout=int(IDLE_S * 1000)))
            else:
                wait_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
                events = dict(q.no_intr(self._poll_put.poll, timeout=wait_ms))
            if self._put in events:
                _receive_put(self, q, buf)
            if held is None and self._get in events:
                with self._lock:
                    held = q.as_string(q.no_intr(self._get.recv)) or "default"
                deadline = time.monotonic() + HOLD_S
            if held is not None and (buf.get(held) or time.monotonic() >= deadline):
                _answer_get(self, q, buf, held)
                held = None
    except Exception:
        self._log.exception("bridge failed")


def _receive_put(bridge, q: ModuleType, buf: dict[str, list]) -> None:
    with bridge._lock:
        data = list(q.no_intr(bridge._put.recv_multipart))
    if len(data) != 2:
        raise RuntimeError(f"{len(data)} frames unsupported")
    qname = q.as_string(q.from_msgpack(data[0]))
    msgs = q.from_msgpack(data[1])
    buf.setdefault(qname, []).extend(msgs)
    bridge.nin += len(msgs)


def _answer_get(bridge, q: ModuleType, buf: dict[str, list], qname: str) -> None:
    msgs = buf.get(qname, [])[: bridge._bulk_size]
    q.no_intr(bridge._get.send_multipart, [q.to_msgpack(qname), q.to_msgpack(msgs)])
    bridge.nout += len(msgs)
    bridge.last = time.time()
    if msgs:
        del buf[qname][: bridge._bulk_size]


def long_poll_proxy_queue(module: ModuleType) -> None:
    """radical.pilot.proxy.Proxy._worker (run in a fork of the launcher) long-polls its queue."""
    proxy_cls = module.Proxy
    _require(proxy_cls, "_worker")
    worker = proxy_cls._worker

    def long_polling_worker(self, *args, **kwargs):
        from radical.utils.zmq import queue

        _apply("radical.utils.zmq.queue", long_poll_queues, queue)
        return worker(self, *args, **kwargs)

    proxy_cls._worker = long_polling_worker


# --- pubsub bridges ------------------------------------------------------------------------


def slow_idle_pubsubs(module: ModuleType) -> None:
    """radical.utils.zmq.pubsub.PubSub._bridge_work, looking at its stop flag every IDLE_S."""
    _require(module.PubSub, "_bridge_work")
    module.PubSub._bridge_work = _pubsub_bridge_work


def _pubsub_bridge_work(self) -> None:
    while not self._term.is_set():
        socks = dict(self._poll.poll(timeout=int(IDLE_S * 1000)))
        if self._xsub in socks:  # a subscription: forward it to the publishers' side
            self._xpub.send(self._xsub.recv())
        if self._xpub in socks:  # a message: forward it to the subscribers
            self._xsub.send(self._xpub.recv())


def quiet_pipe_listeners(module: ModuleType) -> None:
    """radical.utils.zmq.pipe.Pipe._listener, looking at its stop flag every IDLE_S (RADICAL:
    10 ms; messages are handled the moment they come either way)."""
    _require(module.Pipe, "_listener")
    _require(module, "from_msgpack")
    module.Pipe._listener = _pipe_listener


def _pipe_listener(self) -> None:
    from radical.utils.zmq import pipe

    while not self._term.is_set():
        socks = dict(self._poller.poll(timeout=int(IDLE_S * 1000)))
        if self._sock in socks:
            message = pipe.from_msgpack(self._sock.recv())
            for callback in self._cbs:
                try:
                    callback(message)
                except Exception:
                    self._log.exception("callback failed")


# --- process starts ------------------------------------------------------------------------


def parallel_process_starts(module: ModuleType) -> None:
    """ComponentManager's `radical-pilot-*` calls start at once; `_wait_startup` waits for all.

    Inside radical.pilot.utils.component_manager, `ru` becomes a stand-in whose `sh_callout`
    starts the command and returns success at once (`_PendingStarts.callout`); the starts of
    one thread are collected and checked (exit code, stderr) before the original
    `_wait_startup` waits for the processes' start-up messages, as it did before.
    """
    manager = module.ComponentManager
    _require(manager, "start_bridges", "start_components", "_wait_startup")
    _require(module.ru, "sh_callout")
    starts = _PendingStarts()
    module.ru = _ModuleStandIn(module.ru, sh_callout=starts.callout)
    wait_startup = manager._wait_startup

    def wait_for_starts_then_startup(self, uids, timeout):
        starts.wait_all(timeout)
        return wait_startup(self, uids, timeout)

    manager._wait_startup = wait_for_starts_then_startup


class _PendingStarts(threading.local):
    """The `radical-pilot-*` processes this thread started and has not waited for yet."""

    def __init__(self) -> None:
        self.running: list[tuple[str, subprocess.Popen]] = []

    def start(self, cmd: str, cwd: str | None) -> None:
        proc = subprocess.Popen(shlex.split(cmd), cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.running.append((cmd, proc))

    def callout(self, cmd: str, cwd: str | None = None, **_: object) -> tuple[str, str, int]:
        """`ru.sh_callout` that starts `cmd` and reports success at once (see wait_all)."""
        self.start(cmd, cwd)
        return "", "", 0

    def wait_all(self, timeout: float) -> None:
        running, self.running = self.running, []
        failed = []
        for cmd, proc in running:
            out, err = proc.communicate(timeout=timeout)
            if proc.returncode:
                failed.append(f"{cmd}: exit {proc.returncode} [{out.strip()}] [{err.strip()}]")
        if failed:
            raise RuntimeError("process startup failed: " + "; ".join(failed))


# --- process watchers ----------------------------------------------------------------------


def slow_process_watchers(module: ModuleType) -> None:
    """radical.utils.heartbeat.PWatcher._watch, looking every WATCH_S instead of 50 ms."""
    watcher = module.PWatcher
    _require(watcher, "_watch", "_is_alive", "_nothing", "_suicide", "_killall", "_rampage")
    watcher._watch = _watch_processes


def _watch_processes(self) -> None:
    actions = {self.NOTHING: self._nothing, self.SUICIDE: self._suicide,
               self.KILLALL: self._killall, self.RAMPAGE: self._rampage}
    while True:
        with self._lock:
            for pid in list(self._pids):
                if not self._is_alive(pid):
                    self._log.warn("process %d died, exit", pid)
                    self._pids.remove(pid)
                    actions[self._action](pid)
        time.sleep(WATCH_S)


# --- component timers ----------------------------------------------------------------------


def coarse_component_timers(module: ModuleType) -> None:
    """radical.pilot.utils.component sleeps at least TIMER_TICK_S (its `time` is a stand-in)."""
    _require(module, "BaseComponent")
    _sleep_at_least(module, TIMER_TICK_S)


# The agent modules whose only `time.sleep` is their idle sleep, and the class each defines.
AGENT_LOOPS = {"radical.pilot.agent.executing.popen": "Popen",
               "radical.pilot.agent.scheduler.base": "AgentSchedulingComponent"}


def slow_idle_agent_loops(module: ModuleType) -> None:
    """The agent's popen executor or scheduler (the module given, one of AGENT_LOOPS) sleeps at
    least AGENT_IDLE_S when idle (radical.pilot 1.103)."""
    _require(module, AGENT_LOOPS[module.__name__])
    _sleep_at_least(module, AGENT_IDLE_S)


def _sleep_at_least(module: ModuleType, shortest_s: float) -> None:
    """`module`'s `time` becomes a stand-in whose `sleep` lasts at least `shortest_s`."""
    _require(module.time, "sleep", "time")

    def sleep(seconds: float) -> None:
        time.sleep(max(seconds, shortest_s))

    module.time = _ModuleStandIn(module.time, sleep=sleep)


class _ModuleStandIn:
    """A module as the patched one sees it under its import name: `overrides` replace some of
    its attributes, every other name is the module's own."""

    def __init__(self, module: ModuleType, **overrides: Callable) -> None:
        self._module = module
        self.__dict__.update(overrides)

    def __getattr__(self, name: str):
        return getattr(self._module, name)


def _require(owner: object, *names: str) -> None:
    missing = [name for name in names if not hasattr(owner, name)]
    if missing:
        raise AttributeError(f"{getattr(owner, '__name__', owner)} lacks {missing}")


Patches = dict[str, Callable[[ModuleType], None]]  # module name -> its patch
EVERY_PROCESS: Patches = {
    "radical.utils.heartbeat": slow_process_watchers,
    "radical.utils.zmq.pubsub": slow_idle_pubsubs,
    "radical.utils.zmq.pipe": quiet_pipe_listeners,
}
BRIDGE_PATCHES: Patches = {"radical.utils.zmq.queue": long_poll_queues, **EVERY_PROCESS}
START_PATCHES: Patches = {
    "radical.pilot.utils.component_manager": parallel_process_starts,
    "radical.pilot.proxy": long_poll_proxy_queue,
    "radical.pilot.utils.component": coarse_component_timers,
    **dict.fromkeys(AGENT_LOOPS, slow_idle_agent_loops),
    **EVERY_PROCESS,
}
