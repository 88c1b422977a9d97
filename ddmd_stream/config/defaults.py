"""Files the package ships (PDBs, ADIOS2 XMLs, launch presets), used as config defaults.

Apart from `load` so that the schema can name them without importing the loader.

One source of truth: `data/adios_xml` and `data/launch` are symlinks to the repository's
top-level `adios_xml/` and `launch/`; building a wheel copies their content into the package.
So in a source tree a packaged preset *is* the repository's file, and when installed the
package holds the same files where they sit in the repository relative to each other.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

PACKAGE_ROOT = Path(str(resources.files("ddmd_stream")))
PACKAGE_DATA = PACKAGE_ROOT / "data"
PRESETS = PACKAGE_DATA / "launch"
DEFAULT_PDB = PACKAGE_DATA / "fs-peptide.pdb"
DEFAULT_XML_NAME = "adios_xml/sst.xml"
# top-level folders of the repository that the package holds (in PACKAGE_DATA)
PACKAGED_FOLDERS = ("adios_xml", "launch")


def repository_root() -> Path:
    """The source tree holding this package (for the shipped adios_xml/ and launch/)."""
    return PACKAGE_DATA.resolve().parent.parent


def default_adios_xml() -> Path:
    """The packaged ADIOS2 XML (the repository's adios_xml/sst.xml), used when
    `streams.adios_xml` is not given."""
    return (PACKAGE_DATA / DEFAULT_XML_NAME).resolve()


def packaged_presets() -> dict[str, Path]:
    """The launch presets the package ships, by name (`local` → …/launch/local.yaml)."""
    return {path.stem: path for path in sorted(PRESETS.glob("*.yaml"))}


def find_config(path: str | Path) -> Path:
    """`path`, or the packaged preset it names when there is no such file (`local`)."""
    path = Path(path)
    preset = packaged_presets().get(str(path))
    return preset if preset is not None and not path.exists() else path


def _is_installed_preset_folder(folder: Path) -> bool:
    """`folder` is the presets folder of an installed package (not a link into a source tree)."""
    return not PRESETS.is_symlink() and folder.resolve() == PRESETS.resolve()


def installed_preset_path(path: Path, base: Path) -> Path | None:
    """Where a relative `path` of a packaged preset in `base` points once installed; None when
    `base` is not the installed presets folder (or `path` is absolute): resolve as usual.

    The preset's relative paths name repository files: those under the packaged folders or the
    package itself resolve to the package's copies; any other (the run directory, ../shared)
    resolves against the current directory, since site-packages is no place for a run.
    """
    if path.is_absolute() or not _is_installed_preset_folder(base):
        return None
    in_repository = Path(os.path.normpath(Path(PRESETS.name) / path.expanduser()))
    top = in_repository.parts[0] if in_repository.parts else ""
    if top == PACKAGE_ROOT.name:
        return PACKAGE_ROOT.joinpath(*in_repository.parts[1:])
    if top in PACKAGED_FOLDERS:
        return PACKAGE_DATA / in_repository
    return Path.cwd() / in_repository
