"""Files the package and its source tree ship, used as config defaults.

Apart from `load` so that the schema can name them without importing the loader.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGE_DATA = Path(str(resources.files("ddmd_stream") / "data"))
DEFAULT_PDB = PACKAGE_DATA / "fs-peptide.pdb"
DEFAULT_XML_NAME = "adios_xml/sst.xml"


def repository_root() -> Path:
    """The source tree holding this package (for the shipped adios_xml/ and launch/)."""
    return PACKAGE_DATA.resolve().parent.parent


def default_adios_xml() -> Path:
    """The repository's ADIOS2 XML, used when `streams.adios_xml` is not given."""
    return repository_root() / DEFAULT_XML_NAME
