"""Every bad input gets one clear line naming the file/field, a non-zero exit, and loses nothing.

Most cases run `python -m ddmd_stream.launch CONFIG --check` in-process (its `main`), the way a
user meets them first; the rest use the CLI that reads the broken file.
"""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from ddmd_stream import launch, streams
from ddmd_stream.catalog import CatalogError, OutlierCatalog, OutlierRecord
from ddmd_stream.report import __main__ as report
from ddmd_stream.streams import __main__ as streams_cli

ROOT = Path(__file__).resolve().parents[2]
PDB = ROOT / "ddmd_stream" / "data" / "fs-peptide.pdb"
ALANINE = ROOT / "ddmd_stream" / "data" / "alanine-dipeptide.pdb"
SST_XML = ROOT / "adios_xml" / "sst.xml"


def base_config(tmp_path: Path) -> dict:
    return {
        "workflow": {"run_dir": str(tmp_path / "run")},
        "simulation": {"platform": "CPU", "pdb_file": str(PDB)},
        "streams": {"adios_xml": str(SST_XML)},
    }


def write_yaml(tmp_path: Path, data: dict | str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def check(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    """Run `launch --check`, assert exit 2 and a traceback-free error; return stderr."""
    code = launch.main([str(path), "--check", *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and all(line.startswith("error:") for line in lines), err
    return err


def edited(tmp_path: Path, change: Callable[[dict], None]) -> Path:
    data = base_config(tmp_path)
    change(data)
    return write_yaml(tmp_path, data)


CONFIG_CASES: dict[str, tuple[Callable[[dict], None], list[str]]] = {
    "unknown key": (
        lambda d: d["simulation"].update(report_intervall_ps=5),
        ["report_intervall_ps", "unknown key"],
    ),
    "wrong type": (
        lambda d: d["simulation"].update(num_simulations="many"),
        ["simulation.num_simulations", "many"],
    ),
    "negative interval": (
        lambda d: d["simulation"].update(report_interval_ps=-1),
        ["simulation.report_interval_ps", "-1"],
    ),
    "zero simulations": (
        lambda d: d["simulation"].update(num_simulations=0),
        ["simulation.num_simulations", "0"],
    ),
    "more aggregators than simulations": (
        lambda d: d.update(aggregation={"num_aggregators": 5}),
        ["num_aggregators", "num_simulations"],
    ),
    "bad literal": (
        lambda d: (
            d["agent"].update(detector="kmeans")
            if "agent" in d
            else d.update(agent={"detector": "kmeans"})
        ),
        ["agent.detector", "kmeans"],
    ),
    "missing pdb": (
        lambda d: d["simulation"].update(pdb_file="nowhere.pdb"),
        ["simulation.pdb_file", "nowhere.pdb"],
    ),
    "missing xml": (
        lambda d: d["streams"].update(adios_xml="nowhere.xml"),
        ["streams.adios_xml", "nowhere.xml"],
    ),
    "absent CUDA platform": (
        lambda d: d["simulation"].update(platform="CUDA"),
        ["simulation.platform", "CUDA"],
    ),
    "non-loopback interface for local": (
        lambda d: d.update(resources={"network_interface": "eth0"}),
        ["eth0"],
    ),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_values(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    change, expected = CONFIG_CASES[case]
    err = check(edited(tmp_path, change), capsys)
    for word in expected:
        assert word in err, err
    assert "config.yaml" in err or "simulation.pdb_file" in err


def test_malformed_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = check(write_yaml(tmp_path, "simulation:\n  num_simulations: [1, 2\n"), capsys)
    assert "config.yaml" in err and "line" in err


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = check(tmp_path / "absent.yaml", capsys)
    assert "absent.yaml" in err and "not found" in err


def test_unparsable_pdb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.pdb"
    garbage.write_text("this is not a protein\n")
    err = check(edited(tmp_path, lambda d: d["simulation"].update(pdb_file=str(garbage))), capsys)
    assert "garbage.pdb" in err


def test_pdb_the_forcefield_cannot_parametrize(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_hydrogens = tmp_path / "noh.pdb"
    lines = PDB.read_text().splitlines()
    no_hydrogens.write_text(
        "\n".join(
            line for line in lines if not (line.startswith("ATOM") and line[76:78].strip() == "H")
        )
    )
    err = check(
        edited(tmp_path, lambda d: d["simulation"].update(pdb_file=str(no_hydrogens))), capsys
    )
    assert "noh.pdb" in err and "forcefield" in err


def test_reference_with_other_residue_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = check(
        edited(tmp_path, lambda d: d["simulation"].update(reference_pdb=str(ALANINE))), capsys
    )
    assert "simulation.reference_pdb" in err and "CA" in err


@pytest.mark.parametrize(
    "xml_text, expected",
    [
        ("<adios-config><io name='SimulationOutput'>", "not valid XML"),
        (
            "<adios-config><io name='SimulationOutput'><engine type='SSC'/></io>"
            "<io name='AggregatorOutput'><engine type='BP5'/></io></adios-config>",
            "SSC",
        ),
        (
            "<adios-config><io name='SimulationOutput'><engine type='DataMan'/></io>"
            "<io name='AggregatorOutput'><engine type='BP5'/></io></adios-config>",
            "DataMan",
        ),
        (
            "<adios-config><io name='SimulationOutput'><engine type='SST'/></io></adios-config>",
            "AggregatorOutput",
        ),
    ],
    ids=["malformed", "ssc-engine", "dataman-engine", "io-missing"],
)
def test_bad_adios_xml(
    xml_text: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    xml = tmp_path / "bad.xml"
    xml.write_text(xml_text)
    err = check(edited(tmp_path, lambda d: d["streams"].update(adios_xml=str(xml))), capsys)
    assert "streams.adios_xml" in err and "bad.xml" in err and expected in err


def test_non_loopback_sst_interface_for_local(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    xml = tmp_path / "eth.xml"
    xml.write_text(
        SST_XML.read_text().replace(
            '"NetworkInterface" value="lo"', '"NetworkInterface" value="eth0"'
        )
    )
    err = check(edited(tmp_path, lambda d: d["streams"].update(adios_xml=str(xml))), capsys)
    assert "NetworkInterface" in err and "eth0" in err


def test_unknown_resource(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = edited(
        tmp_path,
        lambda d: d.update(
            resources={"resource": "ornl.nowhere", "project": "abc", "cores_per_node": 42}
        ),
    )
    err = check(path, capsys)
    assert "ornl.nowhere" in err and "resources.resource" in err


def test_existing_run_dir_is_refused_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("precious: true\n")
    code = launch.main([str(write_yaml(tmp_path, base_config(tmp_path))), "--duration", "5"])
    err = capsys.readouterr().err
    assert code == 2 and "already holds a run" in err and "Traceback" not in err
    assert (run / "config.yaml").read_text() == "precious: true\n"


def test_unwritable_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    data = base_config(tmp_path)
    data["workflow"]["run_dir"] = str(blocker / "run")
    code = launch.main([str(write_yaml(tmp_path, data)), "--duration", "5"])
    err = capsys.readouterr().err
    assert code == 2 and "file-not-dir" in err and "Traceback" not in err


# --------------------------------------------------------------------------- broken files


def test_truncated_bp5_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    store = tmp_path / "agg-0000.bp"
    xml = ROOT / "adios_xml" / "bp5.xml"
    with streams.FrameWriter(xml, "AggregatorOutput", store) as writer:
        writer.write({"rmsd": np.ones(3, np.float32)})
    for part in store.iterdir():
        if part.name.startswith("md."):
            part.write_bytes(part.read_bytes()[:7])
    before = {p.name: p.read_bytes() for p in store.iterdir()}
    code = streams_cli.main(["ls", str(store)])
    err = capsys.readouterr().err
    assert code == 2 and "agg-0000.bp" in err and "Traceback" not in err
    assert before == {p.name: p.read_bytes() for p in store.iterdir()}


def test_catalog_truncated_newer_or_foreign(tmp_path: Path) -> None:
    import numpy as np

    catalog = OutlierCatalog(tmp_path / "outliers.pkl")
    catalog.publish([OutlierRecord(0, 1, np.zeros((2, 3), np.float32), 1.0)])
    good = catalog.path.read_bytes()
    catalog.path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CatalogError, match=r"outliers\.pkl"):
        catalog.load()
    catalog.path.write_bytes(pickle.dumps({"format": 99, "version": 5, "records": []}))
    with pytest.raises(CatalogError, match="newer"):
        catalog.load()
    catalog.path.write_bytes(pickle.dumps({"version": 1, "records": [Path("/etc")]}))
    with pytest.raises(CatalogError, match="refused"):
        catalog.load()


def test_report_of_a_non_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = report.main([str(tmp_path / "nothing-here")])
    err = capsys.readouterr().err
    assert code == 2 and "nothing-here" in err and "Traceback" not in err


def test_task_file_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ddmd_stream.task import run_task

    code = run_task("sim", lambda ctx: None, ["-c", str(tmp_path / "task.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and "task.yaml" in err and "Traceback" not in err


def test_corrupt_model_is_a_clear_error(tmp_path: Path) -> None:
    from ddmd_stream.errors import InputError
    from ddmd_stream.ml.base import load_model

    broken = tmp_path / "v0001"
    broken.mkdir()
    (broken / "model.json").write_text("{ not json")
    with pytest.raises(InputError, match="v0001"):
        load_model(broken)
    shutil.rmtree(broken)
    broken.mkdir()
    with pytest.raises(InputError, match="v0001"):
        load_model(broken)
