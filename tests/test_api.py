"""Trajectories out (`ddmd_stream.export`), lineage, the Python API (`Run`) and the
`ddmd-stream` CLI, all on ONE short real run (local engine) shared by the module; plus a
synthetic store for the streamed-positions path (Cα subset, Å → nm, periodic box)."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mdtraj
import numpy as np
import pytest
from conftest import BP5_XML, SST_XML, start_launcher, stop_launcher, tiny_run

from ddmd_stream.api import Run
from ddmd_stream.catalog import OutlierCatalog
from ddmd_stream.cli import main as cli_main
from ddmd_stream.config import parse_config, save_config
from ddmd_stream.events import read_run_events
from ddmd_stream.export import Structures, export_run
from ddmd_stream.frames import (
    ALL_POSITIONS,
    BOX,
    POSITIONS,
    RMSD,
    SEGMENT_ID,
    SIM_ID,
    STEP,
    STRUCTURE_ID,
    TIME_PS,
)
from ddmd_stream.lineage import LINEAGE_FIELDS, lineage
from ddmd_stream.ml.registry import list_versions
from ddmd_stream.rundir import RunDir
from ddmd_stream.streams import FrameWriter, concat_batches, read_store

ROOT = Path(__file__).resolve().parents[1]
RUN_SECONDS = 75  # long enough for a published model, a catalog and restarts on 2 cores
ATOL_NM = 1e-3


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished streaming run: 2 simulations with restart coordinates, a tiny CVAE."""
    folder = tmp_path_factory.mktemp("api")
    run = folder / "run"
    config = tiny_run(run, SST_XML, workflow={"engine": "local", "duration_s": RUN_SECONDS},
                      simulation={"stream_velocities": True})
    launcher = start_launcher(config, folder / "config.yaml")
    try:
        output, _ = launcher.communicate(timeout=RUN_SECONDS + 150)
    finally:
        stop_launcher(launcher, run)
    assert launcher.returncode == 0, output[-3000:]
    return run


@pytest.fixture
def run_copy(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the shared run that a test may write into."""
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def stored(run: Path, fields: list[str]) -> dict[str, np.ndarray]:
    """`fields` of every frame of every store of `run`, in store order."""
    return concat_batches([read_store(p, fields) for p in RunDir(run).aggregator_stores()])


def restart_events(run: Path) -> list[dict]:
    return [e for e in read_run_events(run) if e["event"] == "restart"]


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("fmt", ["dcd", "xtc", "h5", "pdb"])
def test_trajectories_load_back_equal_to_the_store(run_dir: Path, tmp_path: Path,
                                                   fmt: str) -> None:
    exported = export_run(run_dir, tmp_path, fmt)
    frames = stored(run_dir, [ALL_POSITIONS, SIM_ID])
    sims = sorted(set(frames[SIM_ID].tolist()))
    assert [p.name for p in exported.trajectories] == [
        f"sim-{s:04d}.frames.pdb" if fmt == "pdb" else f"sim-{s:04d}.{fmt}" for s in sims]
    for sim, path in zip(sims, exported.trajectories, strict=True):
        top = {} if fmt == "h5" else {"top": str(tmp_path / f"sim-{sim:04d}.pdb")}  # h5: inside
        traj = mdtraj.load(str(path), **top)
        expected = frames[ALL_POSITIONS][frames[SIM_ID] == sim]
        assert traj.xyz.shape == expected.shape
        np.testing.assert_allclose(traj.xyz, expected, atol=ATOL_NM)
    assert exported.frames == len(frames[SIM_ID])


def test_outliers_pdbs_hold_every_catalog_version(run_dir: Path, tmp_path: Path) -> None:
    exported = export_run(run_dir, tmp_path, outliers=True)
    catalog = OutlierCatalog(RunDir(run_dir).catalog_file)
    versions = [c for c in (OutlierCatalog(catalog.previous_path).load(), catalog.load())
                if c.records]
    assert versions, "the run published no catalog"
    assert [p.name for p in exported.outliers] == [f"outliers-v{c.version:04d}.pdb"
                                                   for c in versions]
    for version, path in zip(versions, exported.outliers, strict=True):
        models = mdtraj.load(str(path))
        expected = np.stack([r.positions for r in version.records])
        assert models.n_frames == len(version.records)
        np.testing.assert_allclose(models.xyz, expected, atol=ATOL_NM)
    with open(tmp_path / "outliers.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == sum(len(c.records) for c in versions)


def test_streamed_positions_get_their_atoms_and_box(tmp_path: Path) -> None:
    """No all_positions: the streamed Cα positions (Å) on a Cα topology, in nm, with the box."""
    run = tmp_path / "run"
    config = parse_config({"workflow": {"run_dir": str(run)},
                           "simulation": {"positions": "ca", "stream_velocities": False}})
    run.mkdir()
    save_config(config, run / "config.yaml")
    ca = Structures(config.simulation).streamed(0)
    rng = np.random.default_rng(1)
    n = 6
    positions = (ca.xyz[0] * 10 + rng.normal(0, 0.5, (n, ca.n_atoms, 3))).astype(np.float32)
    box = np.tile(np.diag([4.0, 4.5, 5.0]).astype(np.float32), (n, 1, 1))
    with FrameWriter(BP5_XML, "AggregatorOutput", run / "stream" / "agg-0000.bp") as writer:
        writer.write({POSITIONS: positions, BOX: box, SIM_ID: np.zeros(n, np.int64),
                      STRUCTURE_ID: np.zeros(n, np.int64),
                      TIME_PS: np.arange(n, dtype=np.float64)})
    exported = export_run(run, tmp_path / "out", "dcd")
    traj = mdtraj.load(str(exported.trajectories[0]), top=str(tmp_path / "out" / "sim-0000.pdb"))
    assert [a.name for a in traj.topology.atoms] == ["CA"] * ca.n_atoms
    np.testing.assert_allclose(traj.xyz, positions * 0.1, atol=ATOL_NM)
    np.testing.assert_allclose(traj.unitcell_vectors, box, atol=ATOL_NM)


# --------------------------------------------------------------------------- lineage


def test_lineage_rows_are_the_restart_events(run_dir: Path, tmp_path: Path) -> None:
    events = restart_events(run_dir)
    assert events, "no simulation restarted during the run"
    rows = lineage(run_dir)
    assert len(rows) == len(events)
    key = ("segment", "source_sim", "source_step", "source_segment", "source_structure",
           "model_version", "rmsd")
    by_event = sorted((int(e["task"].split("-")[1]), e["t"], *(e.get(k) for k in key))
                      for e in events)
    assert sorted((r["sim_id"], r["time"], *(r[k] for k in key)) for r in rows) == by_event
    frames = stored(run_dir, [SIM_ID, STEP, SEGMENT_ID, STRUCTURE_ID, RMSD])
    for row in rows:  # each source is a stored frame, with that segment, structure and RMSD
        match = (frames[SIM_ID] == row["source_sim"]) & (frames[STEP] == row["source_step"])
        assert match.any(), row
        assert frames[SEGMENT_ID][match][0] == row["source_segment"]
        assert frames[STRUCTURE_ID][match][0] == row["source_structure"]
        assert frames[RMSD][match][0] == pytest.approx(row["rmsd"], abs=1e-4)
    export_run(run_dir, tmp_path)
    with open(tmp_path / "lineage.csv") as stream:
        header, *written = list(csv.reader(stream))
    assert header == list(LINEAGE_FIELDS)
    assert written == [["" if row[name] is None else str(row[name]) for name in LINEAGE_FIELDS]
                       for row in rows]


# --------------------------------------------------------------------------- Run


def test_frames_count_what_the_stores_hold(run_dir: Path) -> None:
    run = Run(run_dir)
    expected = stored(run_dir, [RMSD, SIM_ID])
    frames = run.frames([RMSD, SIM_ID])
    assert set(frames) == {RMSD, SIM_ID}
    np.testing.assert_array_equal(frames[RMSD], expected[RMSD])
    only = run.frames([RMSD], sims=[1])
    assert set(only) == {RMSD}
    assert len(only[RMSD]) == int((expected[SIM_ID] == 1).sum())
    assert len(only[RMSD]) > 0
    everything = run.frames()
    assert {ALL_POSITIONS, POSITIONS, SEGMENT_ID} <= set(everything)
    assert len(everything[SIM_ID]) == len(expected[SIM_ID])


def test_new_frames_returns_only_frames_appended_since(run_copy: Path) -> None:
    fields = [RMSD, SIM_ID, STEP]
    store = RunDir(run_copy).aggregator_stores()[0]
    with Run(run_copy) as run:
        first = run.new_frames(fields)
        assert len(first[RMSD]) == len(stored(run_copy, [RMSD])[RMSD])
        assert run.new_frames(fields) == {}
        last = {name: values[-3:] for name, values in read_store(store).items()}
        last[STEP] = last[STEP] + 10**9  # recognisable
        with FrameWriter(RunDir(run_copy).adios_xml, "AggregatorOutput", store,
                         append=True) as writer:
            writer.write(last)
        new = run.new_frames(fields)
        np.testing.assert_array_equal(new[STEP], last[STEP])
        assert run.new_frames([RMSD]) == {}  # other fields: still nothing new
    assert len(Run(run_copy).frames([STEP])[STEP]) == len(first[STEP]) + 3


def test_catalog_models_events_summary(run_dir: Path) -> None:
    run = Run(run_dir)
    assert run.config.simulation.num_simulations == 2
    records = run.catalog()
    assert [r.step for r in records] == [
        r.step for r in OutlierCatalog(RunDir(run_dir).catalog_file).load().records]
    models = run.models()
    assert [m["version"] for m in models] == [v for v, _ in list_versions(run_dir / "model")]
    assert models and "val_loss" in models[0]
    assert run.events() == read_run_events(run_dir)
    summary = run.summary()
    assert summary["state"] == "finished"
    assert run.lineage() == lineage(run_dir)


def test_python_api_doc_runs(run_copy: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ```python block of docs/python-api.md, in order, against the run."""
    text = (ROOT / "docs" / "python-api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(run_copy.parent)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block.replace('"runs/local"', repr(str(run_copy))), "python-api.md",
                     "exec"), namespace)
    out = capsys.readouterr().out
    assert "frames;" in out and "<mdtraj.Trajectory" in out
    assert re.search(r"^\(\d+, \d+\)$", out, flags=re.M), "no latents printed"  # load_model
    assert (run_copy / "export" / "lineage.csv").is_file()


# --------------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ddmd_stream.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_help_and_export(run_dir: Path, tmp_path: Path) -> None:
    shown = _cli("--help")
    assert shown.returncode == 0
    for command in ("launch", "check", "plan", "report", "export", "lineage", "ls", "schema"):
        assert command in shown.stdout
    done = _cli("export", str(run_dir), "--out", str(tmp_path), "--format", "xtc")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "sim-0000.xtc").is_file() and (tmp_path / "sim-0000.pdb").is_file()
    assert "trajectories" in done.stdout
    script = Path(sys.executable).parent / "ddmd-stream"
    if script.exists():  # the console script of `pip install -e .`
        listed = subprocess.run([str(script), "lineage", str(run_dir)], capture_output=True,
                                text=True, timeout=120)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.splitlines()[0] == ",".join(LINEAGE_FIELDS)


def test_bad_run_dir_one_line_exit_2(tmp_path: Path) -> None:
    done = _cli("export", str(tmp_path / "nope"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")


@pytest.mark.parametrize("command", ["export", "lineage", "report"])
def test_bad_run_dir_in_process(command: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main([command, str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
