"""Run configuration: one readable line per bad config, path resolution, the check/schema CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from ddmd_stream.config import (
    DEFAULT_PDB,
    ConfigError,
    RunConfig,
    default_adios_xml,
    example_yaml,
    load_config,
    parse_config,
    save_config,
)

# name: (YAML text, field path, bad value, what is allowed) — each must appear in the one line.
BAD = {
    "unknown top-level key": (
        "simulaton: {num_simulations: 2}\n", "simulaton", "unknown key",
        "did you mean 'simulation'"),
    "unknown nested key": (
        "simulation: {num_simulaton: 2}\n", "simulation.num_simulaton", "unknown key",
        "did you mean 'num_simulations'"),
    "wrong type": (
        "simulation: {num_simulations: two}\n", "simulation.num_simulations", "'two'",
        "valid integer"),
    "fraction for an integer": (
        "simulation: {num_simulations: 2.5}\n", "simulation.num_simulations", "2.5",
        "valid integer"),
    "out of bounds": (
        "simulation: {report_interval_ps: -5}\n", "simulation.report_interval_ps", "-5",
        "greater than 0"),
    "above the maximum": (
        "simulation: {timestep_fs: 20}\n", "simulation.timestep_fs", "20",
        "less than or equal to 10"),
    "bad literal": (
        "simulation: {solvent: water}\n", "simulation.solvent", "'water'",
        "'implicit', 'explicit' or 'vacuum'"),
    "bad list element": (
        "training: {cvae: {conv_filters: [64, x, 64, 64]}}\n", "training.cvae.conv_filters.1",
        "'x'", "valid integer"),
    "section not a mapping": (
        "simulation: 5\n", "simulation", "got 5", "mapping of SimulationConfig fields"),
    "bad YAML syntax": (
        "simulation:\n  num_simulations: 2\n bad: [\n", "line 3, column 2", "expected",
        "not valid YAML"),
    "top level not a mapping": (
        "- workflow\n- simulation\n", "top level", "got list",
        "mapping of sections (workflow, simulation"),
    "band out of order": (
        "agent: {outlier_band: [5000, 1000]}\n", "agent.outlier_band", "[5000, 1000]",
        "0 <= low <= high"),
    "conv layer lists disagree": (
        "training: {cvae: {conv_filters: [64, 64]}}\n", "training.cvae", "2, 4 and 4 entries",
        "one entry per layer"),
    "implicit solvent without its XML": (
        "simulation: {forcefield: [amber99sbildn.xml]}\n", "simulation.forcefield",
        "['amber99sbildn.xml']", "amber99_obc.xml, or set simulation.solvent: vacuum"),
    "more aggregators than simulations": (
        "simulation: {num_simulations: 2}\naggregation: {num_aggregators: 3}\n",
        "aggregation.num_aggregators", "3", "simulation.num_simulations (2)"),
}


def _one_line(error: ConfigError, path: Path) -> str:
    message = str(error)
    assert "\n" not in message and "Traceback" not in message, message
    assert message.startswith(f"{path}: "), message
    assert "pydantic" not in message and "https://" not in message, message
    return message


@pytest.mark.parametrize("name", list(BAD))
def test_bad_config_gives_one_readable_line(tmp_path: Path, name: str) -> None:
    text, field, value, allowed = BAD[name]
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = _one_line(error.value, path)
    for part in (field, value, allowed):
        assert part in message, (part, message)


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="config file not found") as error:
        load_config(missing)
    _one_line(error.value, missing)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00simulation: {}\n")
    with pytest.raises(ConfigError, match="cannot read") as error:
        load_config(binary)
    _one_line(error.value, binary)


def test_all_problems_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("simulation: {num_simulations: 0, solvent: water}\nagent: {eps: -1}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = _one_line(error.value, path)
    assert message.count("; ") >= 2
    for field in ("simulation.num_simulations", "simulation.solvent", "agent.eps"):
        assert field in message


def test_relative_paths_resolve_against_the_yaml_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "configs"
    (folder / "inputs").mkdir(parents=True)
    (folder / "inputs" / "start.pdb").write_text("END\n")
    (folder / "my_obc.xml").write_text("<ForceField/>\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump({
        "workflow": {"run_dir": "../runs/a"},
        "simulation": {"pdb_file": "inputs/start.pdb", "reference_pdb": "~/ref.pdb",
                       "forcefield": ["amber99sbildn.xml", "my_obc.xml"]},
        "streams": {"adios_xml": "../xml/bp5.xml", "node_local_path": "/scratch/x"},
    }))
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path / "home")  # somewhere else than the YAML's folder
    config = load_config(path)
    assert config.workflow.run_dir == tmp_path / "runs" / "a"
    assert config.simulation.pdb_file == folder / "inputs" / "start.pdb"
    assert config.simulation.reference_pdb == tmp_path / "home" / "ref.pdb"
    assert config.simulation.forcefield == ["amber99sbildn.xml", str(folder / "my_obc.xml")]
    assert config.streams.adios_xml == tmp_path / "xml" / "bp5.xml"
    assert config.streams.node_local_path == Path("/scratch/x")

    defaults = load_config(_write(tmp_path / "empty.yaml", ""))
    assert defaults.streams.adios_xml == default_adios_xml() and default_adios_xml().is_file()
    assert defaults.simulation.pdb_file == DEFAULT_PDB
    assert defaults.workflow.run_dir == tmp_path / "runs" / "ddmd"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_saved_config_loads_back_the_same(tmp_path: Path) -> None:
    config = parse_config({"simulation": {"num_simulations": 4, "seed": 3},
                           "agent": {"outlier_band": [5, 50]}}, base=tmp_path)
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ddmd_stream.config", *args],
                          capture_output=True, text=True, timeout=60)


def test_check_cli(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.yaml", "simulation: {num_simulations: 3}\n")
    done = _cli("check", str(good))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert resolved["simulation"]["num_simulations"] == 3
    assert resolved["workflow"]["run_dir"] == str(tmp_path / "runs" / "ddmd")

    bad = _write(tmp_path / "bad.yaml", "simulation: {report_interval_ps: -5}\n")
    done = _cli("check", str(bad))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {bad}: ")
    assert "simulation.report_interval_ps" in done.stderr

    no_pdb = _write(tmp_path / "no_pdb.yaml", "simulation: {pdb_file: missing.pdb}\n")
    done = _cli("check", str(no_pdb))
    assert done.returncode == 2 and "simulation.pdb_file: file not found" in done.stderr


def _expected_lines(model: type[BaseModel], indent: int = 0) -> list[tuple[str, str]]:
    """(start of line, description) for every field of the model tree, in schema order."""
    out = []
    pad = "  " * indent
    for name, field in model.model_fields.items():
        assert field.description, f"{model.__name__}.{name} has no description"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.append((f"{pad}# ", field.description))
            out.append((f"{pad}{name}:", ""))
            out.extend(_expected_lines(annotation, indent + 1))
        else:
            out.append((f"{pad}{name}: ", f"  # {field.description}"))
    return out


def test_schema_cli_is_documented_yaml_of_the_defaults(tmp_path: Path) -> None:
    done = _cli("schema")
    assert done.returncode == 0, done.stderr
    assert done.stdout == example_yaml()
    loaded = yaml.safe_load(done.stdout)
    assert isinstance(loaded, dict) and set(loaded) == set(RunConfig.model_fields)
    assert parse_config(loaded, base=tmp_path) == parse_config({}, base=tmp_path)

    lines = done.stdout.splitlines()
    position = 0
    for start, comment in _expected_lines(RunConfig):
        while position < len(lines):
            line = lines[position].replace("# pdb_file:", "pdb_file:")  # shown, left default
            position += 1
            if line.startswith(start) and line.endswith(comment) and (comment or line == start):
                break
        else:
            pytest.fail(f"schema lacks {start!r} with {comment!r}")


def test_duplicate_key_is_an_error_naming_key_and_line(tmp_path: Path) -> None:
    from ddmd_stream.config import ConfigError, load_config

    path = tmp_path / "dup.yaml"
    path.write_text("simulation:\n  num_simulations: 2\n  num_simulations: 4\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml.*line 3.*duplicate key 'num_simulations'"):
        load_config(path)


def test_report_interval_longer_than_a_segment_is_an_error(tmp_path: Path) -> None:
    from ddmd_stream.config import ConfigError, parse_config

    bad = {"simulation": {"report_interval_ps": 50, "segment_length_ns": 0.01}}
    with pytest.raises(ConfigError, match=r"report_interval_ps.*longer than.*segment"):
        parse_config(bad, "run.yaml", tmp_path)


def test_overwrite_deletes_only_a_marked_run_directory(make_config, tmp_path: Path) -> None:
    from ddmd_stream.config import ConfigError
    from ddmd_stream.workflow.prepare import prepare_run_dir

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own notes\n")
    (mine / "thesis.tex").write_text("irreplaceable\n")
    config = make_config(workflow={"run_dir": str(mine), "on_existing": "overwrite"})
    with pytest.raises(ConfigError, match="not made by ddmd_stream"):
        prepare_run_dir(config)
    assert (mine / "thesis.tex").read_text() == "irreplaceable\n"
    run = make_config(workflow={"run_dir": str(tmp_path / "run"), "on_existing": "overwrite"})
    first = prepare_run_dir(run)
    (first.root / "old-output").write_text("x")
    second = prepare_run_dir(run)  # a run directory ddmd_stream made: replaced
    assert second.marker_file.is_file() and not (second.root / "old-output").exists()
