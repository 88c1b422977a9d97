"""The outlier catalog: conformations the agent publishes and simulations restart from.

One pickle file holds `{"version": int, "created": float, "records": [dict, ...]}`.
Publishing takes a file lock, writes a temporary file in the same folder, fsyncs it and
atomically replaces the catalog, so a reader sees the old or the new version, never a mix.
Loading uses a restricted unpickler: only builtins and numpy arrays/dtypes are accepted.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from ddmd_stream.atomic import atomic_path
from ddmd_stream.errors import InputError

logger = logging.getLogger(__name__)

FORMAT = 1
LOCK_POLL_S = 0.005  # publishers waiting for the lock retry this often


class CatalogError(InputError):
    """The catalog file is unreadable, corrupt or refused; the message names the file."""


@dataclass
class OutlierRecord:
    """One conformation to restart from."""

    sim_id: int
    step: int
    positions: np.ndarray  # (n_atoms, 3) nm, float32
    rmsd: float  # Å to the folded reference
    score: float = 0.0
    velocities: np.ndarray | None = None  # (n_atoms, 3) nm/ps
    box: np.ndarray | None = None  # (3, 3) nm periodic box vectors (periodic systems)
    segment_id: int = 0
    structure_id: int = 0  # index into simulation.structures(): the topology of `positions`
    model_version: int = 0
    created: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutlierRecord:
        return cls(**data)


@dataclass(frozen=True)
class Catalog:
    version: int
    created: float
    records: list[OutlierRecord]

    @classmethod
    def empty(cls) -> Catalog:
        return cls(0, 0.0, [])


# --------------------------------------------------------------------------- safe loading

_ALLOWED = {
    ("builtins", "list"),
    ("builtins", "dict"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "str"),
    ("builtins", "bytes"),
    ("builtins", "bool"),
    ("builtins", "complex"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}
_NUMPY_DTYPE_CLASSES = ("numpy.dtypes",)


class RefusedClass(pickle.UnpicklingError):
    """The pickle names a class outside builtins and numpy arrays/dtypes."""


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = (module, name) in _ALLOWED or (
            module in _NUMPY_DTYPE_CLASSES and name.endswith("DType")
        )
        if allowed:
            return super().find_class(module, name)
        raise RefusedClass(f"refused to load {module}.{name} (only builtins and numpy arrays)")


def safe_loads(data: bytes) -> Any:
    return _SafeUnpickler(io.BytesIO(data)).load()


def _decode(path: Path, data: bytes) -> Catalog:
    try:
        payload = safe_loads(data)
    except RefusedClass as error:
        raise CatalogError(
            f"{path}: {error}; the file is not a ddmd_stream catalog (or was tampered with)"
        ) from None
    except Exception as error:  # untrusted bytes: any failure to decode means a broken file
        raise CatalogError(
            f"{path}: corrupt or truncated catalog ({type(error).__name__}: {error})"
        ) from None
    if isinstance(payload, dict) and int(payload.get("format", FORMAT)) > FORMAT:
        raise CatalogError(
            f"{path}: written by a newer ddmd_stream (format {payload['format']}, "
            f"this one reads {FORMAT}); upgrade ddmd_stream"
        )
    if not isinstance(payload, dict) or not {"version", "records"} <= payload.keys():
        raise CatalogError(f"{path}: not a ddmd_stream catalog (missing version/records)")
    try:
        version = int(payload["version"])
        created = float(payload.get("created", 0.0))
        records = [OutlierRecord.from_dict(r) for r in payload["records"]]
    except (TypeError, ValueError) as error:
        raise CatalogError(f"{path}: malformed catalog: {error}") from None
    return Catalog(version, created, records)


def _encode(catalog: Catalog) -> bytes:
    payload = {
        "format": FORMAT,
        "version": catalog.version,
        "created": catalog.created,
        "records": [r.to_dict() for r in catalog.records],
    }
    return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)


# --------------------------------------------------------------------------- the store


class OutlierCatalog:
    """A catalog file with locked, atomic publishing and torn-read-free loading."""

    def __init__(self, path: Path, lock_timeout_s: float = 30.0):
        self.path = Path(path)
        self.lock = FileLock(str(self.path) + ".lock", timeout=lock_timeout_s)
        self.lock_timeout_s = lock_timeout_s

    def load(self) -> Catalog:
        """The newest complete version (an empty catalog when none was published yet).

        No lock is needed: the file is only ever replaced whole by os.replace.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return Catalog.empty()
        except OSError as error:
            raise CatalogError(f"{self.path}: cannot read: {error}") from None
        return _decode(self.path, data)

    def version(self) -> int:
        return self.load().version

    def publish(self, records: list[OutlierRecord]) -> int:
        """Replace the catalog by `records` as the next version; returns that version."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.lock.acquire(poll_interval=LOCK_POLL_S):
                version = self._current_version() + 1
                self._write(Catalog(version, time.time(), list(records)))
        except Timeout:
            raise CatalogError(
                f"{self.lock.lock_file}: lock held for more than {self.lock_timeout_s:.0f} s; "
                "is another agent stuck? (delete the lock file if no agent runs)"
            ) from None
        logger.info("published catalog version %d with %d records", version, len(records))
        return version

    @property
    def previous_path(self) -> Path:
        return self.path.with_name(self.path.name + ".prev")

    def load_last_good(self) -> Catalog:
        """The newest version that loads: the catalog, else the one it replaced."""
        try:
            return self.load()
        except CatalogError as error:
            logger.error("%s; falling back to %s", error, self.previous_path)
        try:
            return _decode(self.previous_path, self.previous_path.read_bytes())
        except (OSError, CatalogError) as error:
            logger.error("no usable previous catalog either (%s); starting empty", error)
            return Catalog.empty()

    def _current_version(self) -> int:
        try:
            return self.load().version
        except CatalogError as error:
            # Never reuse a version: the broken file may have held previous + 1.
            previous = self.load_last_good().version
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.time():.0f}")
            os.replace(self.path, aside)
            logger.error("%s; moved aside to %s", error, aside)
            return previous + 1

    def _write(self, catalog: Catalog) -> None:
        with atomic_path(self.path) as tmp:  # fsynced, renamed over the catalog, folder fsynced
            tmp.write_bytes(_encode(catalog))
            self._keep_previous()

    def _keep_previous(self) -> None:
        """Hard-link the current version as `.prev` (atomic, no copy)."""
        if not self.path.exists():
            return
        link = self.path.with_name(f".{self.path.name}.prev-{os.getpid()}")
        link.unlink(missing_ok=True)
        try:
            os.link(self.path, link)
        except OSError:  # a file system without hard links
            shutil.copyfile(self.path, link)
        os.replace(link, self.previous_path)


def pick_restart(
    catalog: Catalog, sim_id: int, policy: str, rng: np.random.Generator
) -> OutlierRecord | None:
    """The record simulation `sim_id` restarts from: random, or the i-th lowest RMSD."""
    if not catalog.records:
        return None
    if policy == "random":
        return catalog.records[int(rng.integers(len(catalog.records)))]
    if policy == "rank":
        ordered = sorted(catalog.records, key=lambda r: r.rmsd)
        return ordered[sim_id % len(ordered)]
    raise ValueError(f"unknown restart policy {policy!r} (use random or rank)")
