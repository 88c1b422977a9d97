"""ddmd_stream.workflow.radical_patches on real radical.utils queues and real RADICAL processes.

The EnTK runs of the suite (tests/test_entk.py, test_e2e.py, faults/) run with the patches on;
these tests pin what each patch changes, so that they fail where a patch stops applying.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ddmd_stream.workflow import radical_patches
from ddmd_stream.workflow.resources import RADICAL_SITE, patches_env

pytestmark = pytest.mark.timeout(120)


@pytest.fixture()
def queue_bridge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real radical.utils queue bridge running the patched loop (in this process only for the
    test: in-process queues stay unpatched, see radical_patches)."""
    monkeypatch.chdir(tmp_path)  # RADICAL's log files
    import radical.utils as ru
    import radical.utils.zmq.queue as queue_module

    monkeypatch.setattr(queue_module.Queue, "_bridge_work", queue_module.Queue._bridge_work)
    radical_patches.long_poll_queues(queue_module)
    bridge = ru.zmq.Queue("ddmd_test_queue", cfg={"path": str(tmp_path)})
    bridge.start()
    yield ru, bridge
    bridge.stop()


def test_queue_bridge_holds_an_empty_get_and_answers_when_messages_come(queue_bridge) -> None:
    ru, bridge = queue_bridge
    assert ru.zmq.Queue._bridge_work is radical_patches._long_poll_bridge_work
    putter = ru.zmq.Putter("ddmd_test_queue", url=str(bridge.addr_put))
    getter = ru.zmq.Getter("ddmd_test_queue", url=str(bridge.addr_get))
    # RADICAL's loop answers at once with nothing; the patched one holds the request
    assert getter.get_nowait(timeout=int(radical_patches.HOLD_S * 1000 / 5)) is None
    sent = [{"uid": f"task.{i:04d}"} for i in range(50)]
    for msg in sent[:10]:
        putter.put(msg)
    received: list = []
    deadline = time.monotonic() + 30
    while len(received) < len(sent) and time.monotonic() < deadline:
        got = getter.get_nowait(timeout=1000)
        received += ru.as_list(got) if got else []
        if len(received) == 10:
            for msg in sent[10:]:
                putter.put(msg)
    assert received == sent  # every message, once, in order


def test_an_empty_get_is_answered_within_the_hold(queue_bridge) -> None:
    ru, bridge = queue_bridge
    getter = ru.zmq.Getter("ddmd_test_queue", url=str(bridge.addr_get))
    assert getter.get_nowait(timeout=int(radical_patches.HOLD_S * 1000 * 20)) == []


def test_session_proxy_fork_holds_an_empty_get(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The real proxy worker, forked as RADICAL forks it, serves a long-polled task queue; the
    forking process's own queue class stays RADICAL's."""
    import multiprocessing as mp

    import radical.pilot.proxy as proxy_module
    import radical.utils as ru
    import radical.utils.zmq.queue as queue_module

    monkeypatch.chdir(tmp_path)
    shipped = queue_module.Queue._bridge_work
    monkeypatch.setattr(proxy_module.Proxy, "_worker", proxy_module.Proxy._worker)
    radical_patches.long_poll_proxy_queue(proxy_module)
    context = mp.get_context("fork")
    channels, term = context.Queue(), context.Event()
    worker = context.Process(target=proxy_module.Proxy._worker,
                             args=(None, "rp.session.test", channels, term, str(tmp_path)))
    worker.start()
    try:
        urls = channels.get(timeout=30)["proxy_task_queue"]
        getter = ru.zmq.Getter("proxy_task_queue", url=urls["addr_get"])
        started = time.monotonic()
        assert getter.get_nowait(timeout=int(radical_patches.HOLD_S * 1000 / 5)) is None
        assert getter.get_nowait(timeout=int(radical_patches.HOLD_S * 1000 * 20)) == []
        assert time.monotonic() - started >= radical_patches.HOLD_S * 0.9  # held, then empty
        assert queue_module.Queue._bridge_work is shipped
    finally:
        term.set()
        worker.join(timeout=30)


def test_pipe_listener_hands_every_message_to_its_callback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    import radical.utils as ru
    import radical.utils.zmq.pipe as pipe_module

    monkeypatch.setattr(pipe_module.Pipe, "_listener", pipe_module.Pipe._listener)
    radical_patches.quiet_pipe_listeners(pipe_module)
    pull = ru.zmq.Pipe(mode=ru.zmq.MODE_PULL)
    received: list = []
    pull.register_cb(received.append)
    push = ru.zmq.Pipe(mode=ru.zmq.MODE_PUSH, url=str(pull.url))
    sent = [{"n": i} for i in range(20)]
    for msg in sent:
        push.put(msg)
    deadline = time.monotonic() + 30
    while len(received) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert received == sent
    assert pipe_module.Pipe._listener is radical_patches._pipe_listener


def _probe(tmp_path: Path, name: str, env: dict[str, str]) -> str:
    """Run a script called `name` that reports which of RADICAL's modules are patched."""
    script = tmp_path / name
    script.write_text(
        "import radical.utils.zmq.queue as q\n"
        "import radical.pilot.utils.component_manager as cm\n"
        "import radical.utils.heartbeat as hb\n"
        "import radical.pilot.utils.component as comp\n"
        "import radical.pilot.agent.executing.popen as popen\n"
        "import radical.pilot.agent.scheduler.base as scheduler\n"
        "print(q.Queue._bridge_work.__module__, type(cm.ru).__name__,\n"
        "      hb.PWatcher._watch.__module__, type(comp.time).__name__,\n"
        "      type(popen.time).__name__, type(scheduler.time).__name__)\n"
    )
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         text=True, timeout=100, check=True)
    return out.stdout.strip()


def test_sitecustomize_patches_radical_processes_only(tmp_path: Path) -> None:
    env = {**os.environ, **patches_env()}
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(RADICAL_SITE)
    bridge = _probe(tmp_path, "radical-pilot-bridge", env)
    ours = "ddmd_stream.workflow.radical_patches"
    assert bridge == f"{ours} module {ours} module module module"
    agent = _probe(tmp_path, "radical-pilot-agent_0", env)
    assert agent == (f"radical.utils.zmq.queue _ModuleStandIn {ours} _ModuleStandIn "
                     "_ModuleStandIn _ModuleStandIn")
    other = _probe(tmp_path, "other-probe", env)
    assert other == "radical.utils.zmq.queue module radical.utils.heartbeat module module module"


@pytest.mark.parametrize("name", ["radical.pilot.agent.executing.popen",
                                  "radical.pilot.agent.scheduler.base"])
def test_agent_loops_sleep_at_least_the_idle_time(name: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    module = importlib.import_module(name)
    monkeypatch.setattr(module, "time", module.time)
    radical_patches.slow_idle_agent_loops(module)
    started = time.monotonic()
    module.time.sleep(0.01)  # the loops' idle sleep: 50 ms / 0.1 s in RADICAL
    assert time.monotonic() - started >= radical_patches.AGENT_IDLE_S * 0.95
    assert module.time.time() > 0  # every other name is the module's own


def test_sitecustomize_runs_the_next_sitecustomize_on_the_path(tmp_path: Path) -> None:
    other = tmp_path / "other_site"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import builtins\nbuiltins.DDMD_NEXT_SITE = 1\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(RADICAL_SITE), str(other)])}
    out = subprocess.run([sys.executable, "-c", "print(DDMD_NEXT_SITE)"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "1", out.stderr


def test_a_failed_process_start_names_the_command(tmp_path: Path) -> None:
    starts = radical_patches._PendingStarts()
    starts.start(f"{sys.executable} -c pass", str(tmp_path))
    starts.start(f"{sys.executable} -c 'import sys; sys.exit(\"no registry\")'", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"sys.exit.*exit 1 .*no registry"):
        starts.wait_all(timeout=60)
    assert starts.running == []
