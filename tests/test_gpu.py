"""GPU sharing without a GPU: slots per GPU, the MPS daemon (a fake control program records its
calls), GPU id mapping in tasks, and the Keras torch backend against TensorFlow."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ddmd_stream import launch
from ddmd_stream.config import ConfigError, RunConfig, parse_config
from ddmd_stream.rundir import RunDir
from ddmd_stream.task import (
    KERAS_BACKEND_VAR,
    SLOTS_PER_GPU_VAR,
    map_gpu_slots,
    prepare_process_env,
)
from ddmd_stream.workflow import mps
from ddmd_stream.workflow.prepare import preview_plan
from ddmd_stream.workflow.resources import local_resource_json, pilot_gpus, resource_override

REPO = Path(__file__).resolve().parent.parent

# Stands in for nvidia-cuda-mps-control: logs each call (arguments, stdin, pipe folder);
# `-d` leaves a bound Unix socket `control` in the pipe folder, `quit` removes it.
FAKE_MPS = """\
#!{python}
import os, socket, sys
pipe = os.environ["CUDA_MPS_PIPE_DIRECTORY"]
stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read().strip()
with open(os.environ["FAKE_MPS_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "|" + stdin + "|" + pipe + "|"
              + os.environ.get("CUDA_MPS_LOG_DIRECTORY", "") + "\\n")
control = os.path.join(pipe, "control")
if sys.argv[1:] == ["-d"]:
    socket.socket(socket.AF_UNIX).bind(control)
elif stdin == "quit" and os.path.exists(control):
    os.unlink(control)
"""


@pytest.fixture()
def fake_mps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake control program first on PATH; returns the log of its calls."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    program = bindir / mps.MPS_CONTROL
    program.write_text(FAKE_MPS.format(python=sys.executable))
    program.chmod(0o755)
    log = tmp_path / "mps-calls.log"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MPS_LOG", str(log))
    return log


def calls(log: Path) -> list[list[str]]:
    return [line.split("|") for line in log.read_text().splitlines()] if log.exists() else []


def gpu_config(run_dir: Path, **resources: Any) -> RunConfig:
    """Local run, 4 simulations on one GPU (slots), trainer and agent on it too."""
    settings = {
        "gpus_per_node": 1,
        "simulations_per_gpu": 4,
        "sim": {"gpus": 1},
        "trainer": {"gpus": 1},
        **resources,
    }
    return parse_config(
        {
            "workflow": {"run_dir": str(run_dir), "engine": "local", "duration_s": 5},
            "simulation": {"num_simulations": 4, "platform": "CPU"},
            "resources": settings,
        }
    )


# --------------------------------------------------------------------------- config


def test_config_defaults_and_errors(tmp_path: Path) -> None:
    config = parse_config({})
    assert config.resources.simulations_per_gpu == 1 and config.resources.mps == "auto"
    assert config.training.backend == "tensorflow" and not config.resources.mps_enabled
    with pytest.raises(ConfigError, match=r"resources: simulations_per_gpu: 4 .*sim.gpus: 1"):
        parse_config({"resources": {"simulations_per_gpu": 4}})
    with pytest.raises(ConfigError, match=r"training: backend: the 3dAAE's .*tensorflow"):
        parse_config({"training": {"model": "aae", "backend": "torch"}})
    with pytest.raises(ConfigError, match=r"resources.mps: .*'auto', 'on' or 'off'"):
        parse_config({"resources": {"mps": "yes"}})
    assert gpu_config(tmp_path).resources.mps_enabled
    assert not gpu_config(tmp_path, mps="off").resources.mps_enabled
    one = {"simulations_per_gpu": 1}
    assert not gpu_config(tmp_path, **one).resources.mps_enabled
    assert gpu_config(tmp_path, mps="on", **one).resources.mps_enabled
    no_gpu = {"mps": "on", "sim": {"gpus": 0}}
    assert not gpu_config(tmp_path, **one, **no_gpu).resources.mps_enabled


def test_presets_share_gpus() -> None:
    from ddmd_stream.config import load_config
    from ddmd_stream.workflow.resources import check_resources

    configs = {p.stem: load_config(p) for p in (REPO / "launch").glob("*.yaml")}
    per_gpu = {name: c.resources.simulations_per_gpu for name, c in configs.items()}
    assert per_gpu["polaris"] == per_gpu["perlmutter"] == 4
    assert per_gpu["local"] == per_gpu["summit"] == 1
    for name in ("polaris", "perlmutter"):  # the packed plan fits the nodes
        problems = check_resources(configs[name].resources, preview_plan(configs[name]))
        assert [p for p in problems if not p.startswith("resources.project")] == [], name


# --------------------------------------------------------------------------- plan / RADICAL


def test_plan_uses_slots_and_mps_env_locally(tmp_path: Path) -> None:
    config = gpu_config(tmp_path / "run")
    run = RunDir(config.workflow.run_dir)
    plan = preview_plan(config)
    sims = [t for t in plan.tasks if t.role == "sim"]
    trainer = next(t for t in plan.tasks if t.role == "trainer")
    agent = next(t for t in plan.tasks if t.role == "agent")
    assert [(t.gpus, t.gpu_type) for t in sims] == [(1, "CUDA")] * 4
    assert (trainer.gpus, trainer.gpu_type) == (4, "CUDA")  # a whole GPU = 4 slots
    assert (agent.gpus, agent.gpu_type) == (0, "")
    assert sims[0].environment == {
        SLOTS_PER_GPU_VAR: "4",
        "CUDA_MPS_PIPE_DIRECTORY": str(run.mps_pipe_dir()),
        "CUDA_MPS_LOG_DIRECTORY": str(run.mps_log_dir()),
    }
    assert sims[0].pre_exec == []
    assert trainer.environment == {KERAS_BACKEND_VAR: "tensorflow", SLOTS_PER_GPU_VAR: "4"}
    assert plan.total_gpus == 8
    fake_node = local_resource_json(8, pilot_gpus(config.resources, plan))["localhost"]
    assert fake_node["gpus_per_node"] == 8


def test_cluster_plan_starts_one_daemon_per_node(tmp_path: Path) -> None:
    config = gpu_config(tmp_path / "run", resource="anl.polaris", gpus_per_node=4, nodes=2)
    sim = next(t for t in preview_plan(config).tasks if t.role == "sim")
    assert "CUDA_MPS_PIPE_DIRECTORY" not in sim.environment
    assert sim.pre_exec == mps.node_pre_exec(RunDir(config.workflow.run_dir))
    assert "$(hostname)/pipe" in sim.pre_exec[0]
    assert pilot_gpus(config.resources, preview_plan(config)) == 2 * 4 * 4
    override = resource_override(config.resources, preview_plan(config), tmp_path)
    assert override["polaris"]["gpus_per_node"] == 16


def test_node_pre_exec_is_idempotent(tmp_path: Path, fake_mps: Path) -> None:
    run = RunDir(tmp_path / "run")
    script = "\n".join(["set -e", *mps.node_pre_exec(run)])
    for _ in range(2):
        subprocess.run(["bash", "-c", script], check=True)
    host = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    assert calls(fake_mps) == [
        ["-d", "", str(run.mps_pipe_dir(host)), str(run.mps_log_dir(host))]
    ]


def test_map_gpu_slots_and_task_env(tmp_path: Path) -> None:
    assert map_gpu_slots("5", 4) == "1"
    assert map_gpu_slots("0,1,2,3", 4) == "0"
    assert map_gpu_slots("3,4", 4) == "0,1"
    assert map_gpu_slots("GPU-abc", 4) == "GPU-abc"
    config = gpu_config(tmp_path)
    env = {SLOTS_PER_GPU_VAR: "4", "CUDA_VISIBLE_DEVICES": "6"}
    prepare_process_env(config, "sim", env)
    assert env == {SLOTS_PER_GPU_VAR: "4", "CUDA_VISIBLE_DEVICES": "1"}
    trainer_env = {KERAS_BACKEND_VAR: "jax"}
    prepare_process_env(config, "trainer", trainer_env)  # an explicit setting wins
    agent_env: dict[str, str] = {}
    prepare_process_env(config, "agent", agent_env)
    assert trainer_env == {KERAS_BACKEND_VAR: "jax"}
    assert agent_env == {KERAS_BACKEND_VAR: "tensorflow"}


# --------------------------------------------------------------------------- daemon


def test_daemon_start_stop_commands(tmp_path: Path, fake_mps: Path) -> None:
    run = RunDir(tmp_path / "run")
    with mps.MpsDaemon(run) as daemon:
        assert daemon.socket.is_socket()
    expected = [str(run.mps_pipe_dir()), str(run.mps_log_dir())]
    assert calls(fake_mps) == [["-d", "", *expected], ["", "quit", *expected]]
    assert not daemon.socket.exists()
    daemon.stop()  # a second stop does nothing
    assert len(calls(fake_mps)) == 2


def test_launcher_stops_daemon_when_engine_raises(
    tmp_path: Path, fake_mps: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = gpu_config(tmp_path / "run")

    def broken_engine(*_args: Any) -> dict[str, str]:
        assert calls(fake_mps)[0][0] == "-d"  # started before the engine
        raise RuntimeError("engine failed")

    monkeypatch.setattr(launch, "run_engine", broken_engine)
    with pytest.raises(RuntimeError, match="engine failed"):
        launch.execute(config)
    assert [call[:2] for call in calls(fake_mps)] == [["-d", ""], ["", "quit"]]


def test_daemon_start_failure_is_one_line(tmp_path: Path, fake_mps: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.mps_pipe_dir().parent.mkdir(parents=True)
    run.mps_pipe_dir().write_text("not a folder")
    with pytest.raises(mps.MpsError, match=r"resources.mps: cannot start .*mps: off"):
        mps.MpsDaemon(run).start()


def test_check_without_mps_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-cuda-mps-control here
    config = gpu_config(tmp_path / "run")
    run = RunDir(config.workflow.run_dir)
    problems = mps.check_mps(config.resources, run)
    assert len(problems) == 1 and "nvidia-cuda-mps-control is not on PATH" in problems[0]
    assert mps.check_mps(gpu_config(tmp_path, mps="off").resources, run) == []
    long_run = RunDir(tmp_path / ("x" * 100))
    cluster = gpu_config(tmp_path, resource="anl.polaris").resources
    assert "shorter workflow.run_dir" in mps.check_mps(cluster, long_run)[0]


def test_dry_run_shows_gpu_sharing(
    tmp_path: Path, fake_mps: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    path = tmp_path / "gpu.yaml"
    data = {
        "workflow": {"run_dir": str(tmp_path / "run"), "engine": "local"},
        "simulation": {"num_simulations": 4, "platform": "CPU"},
        "resources": {"gpus_per_node": 1, "simulations_per_gpu": 4, "sim": {"gpus": 1}},
    }
    path.write_text(yaml.safe_dump(data))
    assert launch.main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "GPU sharing   : 4 simulation(s) per GPU; MPS: the launcher runs" in out
    assert "env: CUDA_MPS_PIPE_DIRECTORY=" in out
    assert calls(fake_mps) == []  # a dry run starts nothing


# --------------------------------------------------------------------------- Keras backends

TRAIN_AND_ENCODE = textwrap.dedent(
    """
    import sys
    import numpy as np
    from ddmd_stream.config import CVAEConfig
    from ddmd_stream.ml.cvae import CVAEModel
    import keras

    config = CVAEConfig(conv_filters=[8, 8], conv_kernels=[3, 3], conv_strides=[1, 2],
                        dense_units=16, latent_dim=3)
    maps = (np.random.default_rng(0).random((48, 12, 12)) < 0.3).astype(np.uint8)
    folder = sys.argv[2]
    if sys.argv[1] == "train":
        model = CVAEModel.build(config, maps[:2], seed=1)
        model.fit(maps[:32], maps[32:], epochs=1, batch_size=16)
        model.save(folder)
    else:
        model = CVAEModel.load(folder)
    np.save(f"{folder}/z-{keras.backend.backend()}.npy", model.encode(maps))
    """
)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_torch_trained_cvae_encodes_alike_in_tensorflow(tmp_path: Path) -> None:
    import numpy as np

    script = tmp_path / "cvae.py"
    script.write_text(TRAIN_AND_ENCODE)
    folder = tmp_path / "model"
    for backend, step in (("torch", "train"), ("tensorflow", "load")):
        env = {**os.environ, KERAS_BACKEND_VAR: backend}
        result = subprocess.run([sys.executable, str(script), step, str(folder)], env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    z_torch, z_tf = np.load(folder / "z-torch.npy"), np.load(folder / "z-tensorflow.npy")
    assert z_torch.shape == (48, 3)
    np.testing.assert_allclose(z_tf, z_torch, atol=1e-4)
