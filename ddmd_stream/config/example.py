"""A documented example config, built from the models' defaults and field descriptions.

Apart from `__main__` (which prints it) so that it can be imported without the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ddmd_stream.config.defaults import DEFAULT_PDB
from ddmd_stream.config.run import RunConfig


def _yaml_value(default: Any) -> str:
    """A default as one line of flow-style YAML."""
    if isinstance(default, Path):
        default = str(default)
    if isinstance(default, tuple):
        default = list(default)
    return yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()


def _field_line(name: str, field: FieldInfo, pad: str) -> str:
    """`name: default  # description` for a field that is not a section."""
    default = field.get_default(call_default_factory=True)
    if default == DEFAULT_PDB:  # machine-specific: shown, but left to the default
        return f"{pad}# {name}: <packaged {DEFAULT_PDB.name}>  # {field.description}"
    return f"{pad}{name}: {_yaml_value(default)}  # {field.description}"


def _example_lines(model: type[BaseModel], indent: int) -> list[str]:
    """The lines of `model`'s fields at `indent`, sections nested below their key."""
    lines: list[str] = []
    pad = "  " * indent
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines += [f"{pad}# {field.description}", f"{pad}{name}:"]
            lines.extend(_example_lines(annotation, indent + 1))
        else:
            lines.append(_field_line(name, field, pad))
    return lines


def example_yaml() -> str:
    """A documented example config with every field at its default."""
    header = "# ddmd_stream run configuration (all defaults)"
    return "\n".join([header, *_example_lines(RunConfig, 0)]) + "\n"
