"""ADIOS2 set-up from an XML file: validation, engine lookup, opening, and numpy types.

Writers and readers open by IO name: the engine (SST, BP5, BP4, …) and its parameters come only
from the XML, so a transport is swapped by editing the XML.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ddmd_stream.streams.errors import StreamError, StreamOpenError

# A batch: arrays sharing a leading frame dimension K; each ADIOS step holds one batch.
Batch = dict[str, np.ndarray]

# Engines of the PyPI adios2 wheel (no MPI, DataMan, SSC or HDF5 there).
AVAILABLE_ENGINES = {"sst", "bp5", "bp4", "bp3", "bpfile", "bp", "file", "filestream", "null",
                     "nullcore", "inline"}
# Those among them that write a BP folder on disk (readable after the writer is gone).
FILE_ENGINES = {"bp5", "bp4", "bp3", "bpfile", "bp", "file", "filestream"}

_ADIOS_TYPES = {
    "int8_t": np.int8, "int16_t": np.int16, "int32_t": np.int32, "int64_t": np.int64,
    "uint8_t": np.uint8, "uint16_t": np.uint16, "uint32_t": np.uint32, "uint64_t": np.uint64,
    "float": np.float32, "double": np.float64, "char": np.int8,
}


def load_adios2() -> ModuleType:
    """The adios2 module, imported on first use (`ls` and config users need not pay for it)."""
    import adios2

    return adios2


def _engines(root: ElementTree.Element) -> dict[str | None, ElementTree.Element | None]:
    """The <engine> element (or None) of every <io> of a parsed XML, by IO name (the first
    <io> of a name counts)."""
    engines: dict[str | None, ElementTree.Element | None] = {}
    for io in root.iter("io"):
        engines.setdefault(io.get("name"), io.find("engine"))
    return engines


def validate_xml(xml: Path, io_names: list[str]) -> str | None:
    """A readable problem with an ADIOS XML file (missing, unparsable, IO absent), or None."""
    if not xml.is_file():
        return f"{xml}: ADIOS XML file not found"
    try:
        engines = _engines(ElementTree.parse(xml).getroot())
    except ElementTree.ParseError as error:
        return f"{xml}: not valid XML: {error}"
    missing = [name for name in io_names if name not in engines]
    if missing:
        return f"{xml}: no <io name=...> for {', '.join(missing)} (declared: {sorted(engines)})"
    for name, engine in engines.items():
        if engine is None or not engine.get("type"):
            return f"{xml}: <io name='{name}'> has no <engine type=...>"
        if engine.get("type", "").lower() not in AVAILABLE_ENGINES:
            return (f"{xml}: <io name='{name}'> engine {engine.get('type')!r} is not in "
                    f"this adios2 build; use one of SST, BP5, BP4, Null, Inline")
    return None


def _checked_engine(xml: Path, io_name: str) -> ElementTree.Element:
    """The <engine> of `io_name` in `xml`; StreamError when the XML is not usable for it."""
    problem = validate_xml(Path(xml), [io_name])
    if problem:
        raise StreamError(problem)
    return _engines(ElementTree.parse(xml).getroot())[io_name]


def engine_parameters(xml: Path, io_name: str) -> dict[str, str]:
    """The <parameter key=... value=...> pairs of `io_name`'s engine in `xml`."""
    engine = _engines(ElementTree.parse(xml).getroot()).get(io_name)
    if engine is None:
        return {}
    return {p.get("key", ""): p.get("value", "") for p in engine.iter("parameter")}


def engine_type(xml: Path, io_name: str) -> str:
    """The engine (lower case) that `xml` gives `io_name`, without starting ADIOS."""
    return _checked_engine(xml, io_name).get("type", "").lower()


def is_file_engine(engine: str) -> bool:
    """Does `engine` write a BP folder on disk (rather than stream over the network)?"""
    return engine.lower() in FILE_ENGINES


def declare_io(xml: Path, io_name: str) -> tuple[Any, Any]:
    """(Adios, IO) for `io_name` configured by `xml` (engine and parameters from the XML only).

    Keep the Adios object alive as long as the IO is used."""
    _checked_engine(xml, io_name)
    adios = load_adios2().Adios(str(xml))
    return adios, adios.declare_io(io_name)


def open_engine(io: Any, path: Path, mode: Any) -> Any:
    """`io.open(path, mode)`; StreamOpenError (with ADIOS's reason) when ADIOS refuses."""
    try:
        return io.open(str(path), mode)
    except (RuntimeError, ValueError) as error:
        raise StreamOpenError(
            f"{path}: cannot open ({io.engine_type().lower()}): {adios_message(error)}"
        ) from None


def adios_dtype(adios_type: str) -> np.dtype:
    """The numpy dtype of an ADIOS variable type name ("double", "int64_t", …)."""
    try:
        return np.dtype(_ADIOS_TYPES[adios_type])
    except KeyError:
        raise StreamError(f"unsupported ADIOS variable type {adios_type!r}") from None


def read_block(engine: Any, variable: Any, out: np.ndarray, start: list[int] | None = None) -> None:
    """Read `out.shape` elements of `variable` from `start` (its selection as set when None)
    into `out`, now; only that block's bytes are read."""
    if start is not None:
        variable.set_selection([start, list(out.shape)])
    engine.get(variable, out, load_adios2().bindings.Mode.Sync)


def adios_message(error: Exception) -> str:
    """ADIOS messages carry colour codes and timestamps; keep the informative tail."""
    text = str(error).replace("\x1b", "")
    for marker in ("<ADIOS2 EXCEPTION>", "[ADIOS2 EXCEPTION]"):
        text = text.split(marker)[-1]
    for code in ("[0m", "[1;36m", "[1;34m"):
        text = text.replace(code, "")
    return " ".join(text.split())[:300]
