"""Configuration of a whole run: pydantic models, YAML loading, readable errors.

- `sections`: the section models, one per role plus run-wide and stream settings.
- `run`: `ResourcesConfig` (where tasks run) and `RunConfig`, with the checks across sections.
- `defaults`: files the package and its source tree ship (default PDB, ADIOS2 XML).
- `errors`: `ConfigError` and pydantic errors as one readable line.
- `load`: YAML in, validated `RunConfig` out (paths resolved), input-file checks, YAML out.
- `example`: a documented example YAML of every field at its default.
- `__main__`: `python -m ddmd_stream.config check FILE | schema`.

The schema is two modules, not one: the role sections are long but independent field lists,
while `run` holds what ties them together (resources per role, checks naming several
sections), so a cross-section rule is found in one short module. Import from the package.
"""

from ddmd_stream.config.defaults import (
    DEFAULT_PDB,
    PACKAGE_DATA,
    default_adios_xml,
    repository_root,
)
from ddmd_stream.config.errors import ConfigError, format_validation_error
from ddmd_stream.config.example import example_yaml
from ddmd_stream.config.load import (
    check_inputs,
    dump_config,
    load_config,
    parse_config,
    save_config,
)
from ddmd_stream.config.run import ResourcesConfig, RoleResources, RunConfig
from ddmd_stream.config.sections import (
    AAEConfig,
    AgentConfig,
    AggregationConfig,
    CVAEConfig,
    Section,
    SimulationConfig,
    StreamsConfig,
    TrainingConfig,
    WorkflowConfig,
)

__all__ = [
    "DEFAULT_PDB",
    "PACKAGE_DATA",
    "AAEConfig",
    "AgentConfig",
    "AggregationConfig",
    "CVAEConfig",
    "ConfigError",
    "ResourcesConfig",
    "RoleResources",
    "RunConfig",
    "Section",
    "SimulationConfig",
    "StreamsConfig",
    "TrainingConfig",
    "WorkflowConfig",
    "check_inputs",
    "default_adios_xml",
    "dump_config",
    "example_yaml",
    "format_validation_error",
    "load_config",
    "parse_config",
    "repository_root",
    "save_config",
]
