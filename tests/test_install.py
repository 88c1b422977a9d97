"""A conventional (non-editable) install: the wheel holds the XMLs and presets, and the installed
`ddmd-stream` checks a packaged preset and runs a short workflow from a folder outside the repo.

The package is built from a copy of the repository into a wheel and installed into a fresh
venv (`--system-site-packages`, plus the test interpreter's site-packages when that is itself a
venv), without downloads: `--no-deps --no-build-isolation`.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO

# what `pip wheel` reads from the repository (the package's data links point into the folders)
BUILD_INPUTS = ("setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "ddmd_stream",
                "launch", "adios_xml")
SHIPPED_FOLDERS = ("launch", "adios_xml")


def _run(command: list[str | Path], cwd: Path, timeout_s: float = 120) -> str:
    """Run `command` in `cwd` without the repository on the path; its output (must exit 0)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout_s)
    assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done.stdout


def _copy_repository(dest: Path) -> Path:
    dest.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in BUILD_INPUTS:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(source, dest / name)
    return dest


def _fresh_venv(venv: Path) -> Path:
    """A venv seeing the test interpreter's packages (not its editable ddmd_stream); its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    if sys.prefix != sys.base_prefix:  # the test interpreter is a venv: share its packages
        purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                       venv).strip()
        # plain path lines: the .pth files there (the editable install's finder) are not run
        Path(purelib, "test-interpreter.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel built from a copy of the repository, installed into a fresh venv."""
    root = tmp_path_factory.mktemp("install")
    source = _copy_repository(root / "source")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", root / "dist", source], root)
    wheel = next((root / "dist").glob("ddmd_stream-*.whl"))
    python = _fresh_venv(root / "venv")
    _run([python, "-m", "pip", "install", "-q", "--no-deps", wheel], root)
    work = root / "work"  # outside the repository and the venv
    work.mkdir()
    return {"wheel": wheel, "python": python, "cli": python.parent / "ddmd-stream", "work": work}


def test_wheel_ships_the_repository_xmls_and_presets(installed: dict[str, Path]) -> None:
    with zipfile.ZipFile(installed["wheel"]) as wheel:
        for folder in SHIPPED_FOLDERS:
            files = sorted((REPO / folder).iterdir())
            assert files
            for file in files:
                packaged = wheel.read(f"ddmd_stream/data/{folder}/{file.name}")
                assert packaged == file.read_bytes(), file  # the content, not a link


def test_installed_cli_checks_the_packaged_preset(installed: dict[str, Path]) -> None:
    work, cli = installed["work"], installed["cli"]
    assert "local: OK" in _run([cli, "check", "local"], work)
    listed = dict(line.split() for line in _run([cli, "presets"], work).splitlines())
    package = Path(_run([installed["python"], "-c",
                         "import ddmd_stream; print(ddmd_stream.__file__)"], work)).parent
    assert package.is_relative_to(installed["python"].parent.parent)  # not the source tree
    assert set(listed) == {p.stem for p in (REPO / "launch").glob("*.yaml")}
    assert Path(listed["local"]) == package / "data" / "launch" / "local.yaml"
    # every preset's relative files resolve to the package's copies, its run dir under cwd
    resolved = json.loads(_run([installed["python"], "-c", (
        "import json; from ddmd_stream.config import check_inputs, load_config as load;"
        "from ddmd_stream.config.defaults import packaged_presets as presets;"
        "print(json.dumps({n: [str(load(n).workflow.run_dir), str(load(n).streams.adios_xml),"
        " check_inputs(load(n))] for n in presets()}))")], work))
    for name, (run_dir, xml, problems) in resolved.items():
        assert problems == [], name
        assert Path(run_dir).parent == work / "runs" and Path(xml).is_relative_to(package), name


def test_installed_package_runs_a_short_workflow(installed: dict[str, Path]) -> None:
    """Plain mode (simulation + aggregator) on alanine dipeptide, over the packaged default XML."""
    work, python = installed["work"], installed["python"]
    package_data = Path(_run([python, "-c", "from ddmd_stream.config import PACKAGE_DATA;"
                              "print(PACKAGE_DATA)"], work).strip())
    config = {
        "workflow": {"mode": "plain", "run_dir": "run", "heartbeat_s": 1},
        "simulation": {"num_simulations": 1, "pdb_file": str(package_data /
                       "alanine-dipeptide-c7eq.pdb"), "platform": "Reference",
                       "report_interval_ps": 0.2, "segment_length_ns": 0.002},
        "aggregation": {"flush_interval_s": 0.3},
    }  # no streams.adios_xml: the packaged default
    (work / "plain.yaml").write_text(yaml.safe_dump(config))
    _run([installed["cli"], "launch", "plain.yaml", "--engine", "local", "--duration", "25"],
         work, timeout_s=150)
    run = work / "run"
    assert (run / "adios.xml").read_bytes() == (REPO / "adios_xml" / "sst.xml").read_bytes()
    frames = json.loads(_run([python, "-c", (
        "import json, sys; from ddmd_stream.streams import read_store;"
        "print(json.dumps(read_store(sys.argv[1], ['sim_id'])['sim_id'].tolist()))"),
        run / "stream" / "agg-0000.bp"], work))
    assert len(frames) > 0 and set(frames) == {0}
