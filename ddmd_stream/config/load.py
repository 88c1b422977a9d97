"""Reading, checking and writing config files: YAML in, a validated `RunConfig` out.

Relative paths in a file resolve against the file's folder; checks of the files a config names
(`check_inputs`) are apart from validation, so a config can be checked on another machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ddmd_stream.config.defaults import (
    default_adios_xml,
    find_config,
    installed_preset_path,
    packaged_presets,
)
from ddmd_stream.config.errors import ConfigError, format_validation_error
from ddmd_stream.config.run import RunConfig
from ddmd_stream.config.sections import SimulationConfig


def _absolute(path: Path, base: Path) -> Path:
    return (installed_preset_path(path, base) or base / path.expanduser()).resolve()


def _resolve_paths(model: BaseModel, base: Path) -> None:
    """Make every relative Path field absolute against `base` (the YAML file's folder)."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            _resolve_paths(value, base)
        elif isinstance(value, Path):
            object.__setattr__(model, name, _absolute(value, base))
        elif isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
            object.__setattr__(model, name, [_absolute(v, base) for v in value])


def _resolve_forcefields(simulation: SimulationConfig, base: Path) -> None:
    """Force field entries that name files beside the YAML become absolute paths.

    Other entries are OpenMM's built-in names (amber99sbildn.xml, ...) and stay as they are.
    """
    resolved = []
    for entry in simulation.forcefield:
        candidate = base / Path(entry).expanduser()
        resolved.append(str(candidate.resolve()) if candidate.is_file() else entry)
    object.__setattr__(simulation, "forcefield", resolved)


def parse_config(
    data: dict[str, Any] | None, source: str = "<config>", base: Path | None = None
) -> RunConfig:
    """Validate a config mapping; relative paths resolve against `base` (default: cwd)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping of sections "
            f"({', '.join(RunConfig.model_fields)}), got {type(data).__name__}"
        )
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(source, error)) from None
    base = base or Path.cwd()
    _resolve_paths(config, base)
    _resolve_forcefields(config.simulation, base)
    if config.streams.adios_xml is None:
        object.__setattr__(config.streams, "adios_xml", default_adios_xml())
    return config


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (each key once per section)",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    """The parsed YAML of `path`; unreadable files, bad YAML and duplicate keys are a
    `ConfigError` naming the line."""
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the config: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None


def load_config(path: str | Path) -> RunConfig:
    """Load and validate a YAML config file (or the packaged preset a name such as `local`
    names)."""
    path = find_config(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (give the path of a YAML file or a "
                          f"packaged preset: {', '.join(packaged_presets())})")
    return parse_config(_read_yaml(path), str(path), path.resolve().parent)


def _structure_problems(sim: SimulationConfig) -> list[str]:
    """Missing structure files, or structure folders without any *.pdb."""
    problems = []
    for field, path in (
        ("simulation.pdb_file", sim.pdb_file),
        ("simulation.reference_pdb", sim.reference_pdb),
        *(("simulation.initial_structures", p) for p in sim.initial_structures),
    ):
        if path is not None and not path.exists():
            problems.append(f"{field}: file not found: {path}")
    if (
        sim.initial_structures
        and all(p.exists() for p in sim.initial_structures)
        and not sim.structures()
    ):
        problems.append(
            "simulation.initial_structures: no *.pdb files in "
            f"{[str(p) for p in sim.initial_structures]}"
        )
    return problems


def check_inputs(config: RunConfig) -> list[str]:
    """Problems with files the config names (missing PDBs, XML); empty when all is well."""
    problems = _structure_problems(config.simulation) + _steering_problems(config)
    xml = config.streams.adios_xml
    if xml is not None and not xml.is_file():
        problems.append(f"streams.adios_xml: file not found: {xml}")
    return problems


def _steering_problems(config: RunConfig) -> list[str]:
    """An RMSD objective needs a reference other than the structures the simulations start from:
    ranking by RMSD to the start pulls every restart back to where the run began."""
    if config.agent.ranking != "rmsd" or config.workflow.mode == "plain":
        return []
    sim = config.simulation
    reference = sim.reference_pdb
    if reference is None:
        return ["agent.ranking: rmsd needs simulation.reference_pdb (the target structure, "
                "e.g. the folded state); without one, use ranking: score (novelty)"]
    starts = {path.resolve() for path in sim.structures() if path.exists()}
    if reference.exists() and reference.resolve() in starts:
        return [f"agent.ranking: rmsd ranks by RMSD to simulation.reference_pdb ({reference}), "
                "which is a starting structure: restarts would be pulled back to the start; "
                "set a different reference (the target) or use ranking: score"]
    return []


def dump_config(config: RunConfig) -> str:
    """The config as YAML (paths as strings), suitable for `load_config`."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def save_config(config: RunConfig, path: Path) -> None:
    """Write the config as YAML to `path`."""
    path.write_text(dump_config(config))
