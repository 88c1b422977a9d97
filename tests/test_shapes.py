"""Frames of different atom counts (starting structures of different sizes) through the real
stream layer: two writer processes → SST → aggregator → BP5 → every reader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import REPO, SST_XML

from ddmd_stream import frames as f
from ddmd_stream.api import Run
from ddmd_stream.config import PACKAGE_DATA, parse_config
from ddmd_stream.events import read_run_events
from ddmd_stream.export import frame_groups, run_frames, trajectory
from ddmd_stream.ml.data import FrameWindow
from ddmd_stream.rundir import RunDir
from ddmd_stream.streams import (
    ShapeMismatch,
    StoreReader,
    concat_batches,
    group_by_shape,
    read_frames,
    read_store,
)
from ddmd_stream.workflow.local import start_task
from ddmd_stream.workflow.prepare import prepare

SMALL, LARGE = 22, 31  # atoms of the two "structures"
CONTACTS = 4  # contact atoms: the same in both (one protein)
# atom counts of the frames each simulation sends, in order: sim 0 switches structure twice
PLANS = {0: [SMALL] * 5 + [LARGE] * 5 + [SMALL] * 2, 1: [LARGE] * 9}
SHARED = [f.CONTACT_MAP, f.RMSD, f.SIM_ID, f.STEP]

WRITER = """
import sys
from pathlib import Path
import numpy as np
from ddmd_stream.streams import FrameWriter
xml, io_name, path, sim_id, plan = sys.argv[1:6]
sim_id, sizes = int(sim_id), [int(n) for n in plan.split(",")]
with FrameWriter(Path(xml), io_name, Path(path), 60.0) as writer:
    for step, atoms in enumerate(sizes):
        one = lambda value, dtype: np.array([value], dtype)
        writer.write({
            "all_positions": np.full((1, atoms, 3), sim_id * 100 + step, np.float32),
            "velocities": np.zeros((1, atoms, 3), np.float32),
            "box": np.eye(3, dtype=np.float32)[None] * atoms,
            "contact_map": np.ones((1, 4, 4), np.uint8),
            "rmsd": one(step, np.float32), "sim_id": one(sim_id, np.int64),
            "step": one(step, np.int64), "structure_id": one(int(atoms != 22), np.int64),
            "time_ps": one(step, np.float64),
        })
"""


def atoms_of(sim_id: int, step: int) -> int:
    return PLANS[sim_id][step]


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """A run directory whose aggregator stored frames of two atom counts, sent by two writer
    processes over SST (all pending at once: flushed only when the aggregator stops)."""
    folder = tmp_path_factory.mktemp("shapes")
    config = parse_config({
        "workflow": {"run_dir": str(folder / "run"), "engine": "local", "duration_s": 120,
                     "heartbeat_s": 1.0},
        "simulation": {"num_simulations": 2, "platform": "CPU"},
        "aggregation": {"flush_interval_s": 60.0},
        "streams": {"adios_xml": str(SST_XML), "open_timeout_s": 60, "liveness_timeout_s": 5},
    }, "<test>", folder)
    plan = prepare(config)
    run = RunDir(config.workflow.run_dir)
    started = [start_task(spec) for spec in plan.tasks if spec.role == "aggregator"]
    streams = config.streams
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(streams.adios_xml),
                                 streams.simulation_io, str(run.sim_stream(sim)), str(sim),
                                 ",".join(map(str, sizes))], cwd=REPO)
               for sim, sizes in PLANS.items()]
    try:
        assert [w.wait(timeout=90) for w in writers] == [0, 0]
        (run.root / "STOP").write_text("test\n")
        assert [a.wait(timeout=60) for a in started] == [0]
    finally:
        for process in [*writers, *started]:
            if process.poll() is None:
                process.kill()
                process.wait()
    return run


def store_of(run: RunDir) -> Path:
    return run.aggregator_store(0)


def test_aggregator_stores_every_frame_of_both_shapes_once(mixed_run: RunDir) -> None:
    stored = read_store(store_of(mixed_run), SHARED)  # the model input etc.: one shape
    sent = {(sim, step) for sim, sizes in PLANS.items() for step in range(len(sizes))}
    pairs = list(zip(stored[f.SIM_ID].tolist(), stored[f.STEP].tolist(), strict=True))
    assert len(pairs) == len(sent) and set(pairs) == sent
    assert stored[f.CONTACT_MAP].shape == (len(sent), CONTACTS, CONTACTS)
    for sim in PLANS:  # each simulation's frames in the order it sent them
        steps = stored[f.STEP][stored[f.SIM_ID] == sim]
        assert np.array_equal(steps, np.arange(len(PLANS[sim])))
    aggregated = [e for e in read_run_events(mixed_run.root) if e["event"] == "aggregated"]
    assert [e["frames"] for e in aggregated] == [len(sent)]
    steps = StoreReader(mixed_run.adios_xml, "AggregatorOutput", store_of(mixed_run)).read_new()
    assert {b[f.ALL_POSITIONS].shape[1:] for b in steps} == {(SMALL, 3), (LARGE, 3)}
    assert len(steps) <= 4, "one flush: a step per shape and per switch of sim 0, no more"
    for batch in steps:  # a step holds one structure's frames only
        expected = {atoms_of(int(s), int(t)) for s, t in zip(batch[f.SIM_ID], batch[f.STEP],
                                                              strict=True)}
        assert expected == {batch[f.ALL_POSITIONS].shape[1]}


def test_concatenating_a_field_of_two_shapes_is_one_clear_error(mixed_run: RunDir) -> None:
    with pytest.raises(ShapeMismatch, match=r"'all_positions'.*\(22, 3\), \(31, 3\)"):
        read_store(store_of(mixed_run), [f.ALL_POSITIONS, f.SIM_ID])
    ragged = read_store(store_of(mixed_run), [f.ALL_POSITIONS, f.SIM_ID, f.STEP], ragged=True)
    for positions, sim, step in zip(*ragged.values(), strict=True):
        assert positions.shape == (atoms_of(sim, step), 3)
        assert np.all(positions == sim * 100 + step)


def test_read_frames_returns_each_frame_with_its_own_shape(mixed_run: RunDir) -> None:
    steps = StoreReader(mixed_run.adios_xml, "AggregatorOutput", store_of(mixed_run),
                        variables=[f.SIM_ID]).read_new_steps()
    where = np.array([(step, row) for step, batch in steps for row in range(len(batch[f.SIM_ID]))])
    order = np.random.default_rng(3).permutation(len(where))  # any order, across steps
    read = read_frames(store_of(mixed_run), where[order, 0], where[order, 1],
                       [f.ALL_POSITIONS, f.BOX, f.SIM_ID, f.STEP])
    assert read[f.SIM_ID].dtype == np.int64  # a field of one shape stays one array
    for positions, box, sim, step in zip(*read.values(), strict=True):
        assert positions.shape == (atoms_of(sim, step), 3)
        assert np.all(positions == sim * 100 + step)
        assert np.array_equal(box, np.eye(3) * positions.shape[0])


def test_window_reads_the_model_input_over_both_structures(mixed_run: RunDir) -> None:
    window = FrameWindow(mixed_run.adios_xml, "AggregatorOutput", mixed_run.stream_dir, SHARED,
                         100, locate=True)
    assert window.update() == sum(map(len, PLANS.values()))
    rows = window.rows()
    held = window.gather(rows)
    assert held[f.CONTACT_MAP].shape[1:] == (CONTACTS, CONTACTS)
    restart = window.read_stored(rows, [f.ALL_POSITIONS, f.VELOCITIES])
    for i, (sim, step) in enumerate(zip(held[f.SIM_ID], held[f.STEP], strict=True)):
        assert restart[f.ALL_POSITIONS][i].shape == (atoms_of(sim, step), 3)
        assert restart[f.VELOCITIES][i].shape == (atoms_of(sim, step), 3)
    window.close()
    whole = FrameWindow(mixed_run.adios_xml, "AggregatorOutput", mixed_run.stream_dir,
                        [f.ALL_POSITIONS, f.SIM_ID], 100)
    with pytest.raises(ShapeMismatch, match=r"'all_positions'.*one protein"):
        whole.update()
    whole.close()


def test_api_and_export_cope_with_two_atom_counts(mixed_run: RunDir) -> None:
    with Run(mixed_run.root) as run:
        frames = run.frames()  # every field, all_positions as one array per frame
        assert frames[f.CONTACT_MAP].shape[1:] == (CONTACTS, CONTACTS)
        sizes = [p.shape[0] for p in frames[f.ALL_POSITIONS]]
        assert sizes == [atoms_of(s, t) for s, t in zip(frames[f.SIM_ID], frames[f.STEP],
                                                          strict=True)]
        assert len(run.new_frames([f.ALL_POSITIONS])[f.ALL_POSITIONS]) == len(sizes)
    name, exported = run_frames([store_of(mixed_run)])
    groups = frame_groups(exported)
    assert sorted((sim, structure) for sim, structure, _ in groups) == [(0, 0), (0, 1), (1, 1)]
    mdtraj = pytest.importorskip("mdtraj")
    for _sim, structure, rows in groups:  # one trajectory per simulation and structure
        atoms = SMALL if structure == 0 else LARGE
        topology = mdtraj.Topology()
        residue = topology.add_residue("UNK", topology.add_chain())
        for _ in range(atoms):
            topology.add_atom("C", mdtraj.element.carbon, residue)
        start = mdtraj.Trajectory(np.zeros((1, atoms, 3), np.float32), topology)
        assert trajectory(exported, rows, name, start).xyz.shape == (len(rows), atoms, 3)


def test_groups_keep_each_simulation_in_order() -> None:
    def batch(atoms: int, step: int) -> dict[str, np.ndarray]:
        return {"x": np.zeros((1, atoms)), "step": np.array([step])}

    arrived = [(0, batch(2, 0)), (1, batch(3, 0)), (0, batch(3, 1)), (0, batch(2, 2)),
               (1, batch(2, 1))]
    groups = [concat_batches(group) for group in group_by_shape(arrived)]
    assert [(g["x"].shape[1], g["step"].tolist()) for g in groups] == [
        (2, [0]), (3, [0, 1]), (2, [2, 1])]
    with pytest.raises(ShapeMismatch, match="'x'"):
        concat_batches([batch(2, 0), batch(3, 1)])


def _check(tmp_path: Path, structures: list[Path]) -> subprocess.CompletedProcess:
    config = {
        "workflow": {"run_dir": str(tmp_path / "run"), "engine": "local"},
        "simulation": {"pdb_file": str(structures[0]),
                       "initial_structures": [str(p) for p in structures],
                       "platform": "Reference"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([sys.executable, "-m", "ddmd_stream.launch", str(path), "--check"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_check_refuses_starting_structures_of_two_proteins(tmp_path: Path) -> None:
    two = [PACKAGE_DATA / "alanine-dipeptide.pdb", PACKAGE_DATA / "fs-peptide.pdb"]
    result = _check(tmp_path, two)
    assert result.returncode == 2, result.stderr
    lines: list[Any] = [line for line in result.stderr.splitlines() if "differ" in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "simulation.contact_atoms" in lines[0] and "one protein" in lines[0]
    assert "alanine-dipeptide.pdb: 1" in lines[0] and "fs-peptide.pdb: 21" in lines[0]


def test_check_accepts_two_conformations_of_one_protein(make_config: Any) -> None:
    from ddmd_stream.md.system import check_simulation_inputs

    config = make_config(simulation={
        "pdb_file": str(PACKAGE_DATA / "alanine-dipeptide.pdb"), "platform": "Reference",
        "initial_structures": [str(PACKAGE_DATA / "alanine-dipeptide.pdb"),
                               str(PACKAGE_DATA / "alanine-dipeptide-c7eq.pdb")]})
    assert check_simulation_inputs(config.simulation, input_field=f.CONTACT_MAP) == []
