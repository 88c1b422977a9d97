"""A run directory from Python: `Run("runs/local")` (also `from ddmd_stream import Run`).

Frames, the outlier catalog, published models, events, the report's summary and the restart
lineage of one run, finished or still going (docs/python-api.md). Keras is imported only by
`load_model`, mdtraj never.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ddmd_stream.catalog import OutlierCatalog, OutlierRecord
from ddmd_stream.config import RunConfig, load_config
from ddmd_stream.events import read_run_events
from ddmd_stream.frames import SIM_ID
from ddmd_stream.lineage import lineage
from ddmd_stream.ml.base import ModelError
from ddmd_stream.ml.registry import latest_version, list_versions, read_meta, version_name
from ddmd_stream.report.load import check_run_dir
from ddmd_stream.streams import Batch, StoreReader, concat_ragged, read_store

if TYPE_CHECKING:
    from ddmd_stream.ml.base import LatentModel

logger = logging.getLogger(__name__)

Fields = Sequence[str] | None


class Run:
    """One run directory (as `workflow.run_dir` names it); InputError if it is none."""

    def __init__(self, path: str | Path):
        self.dir = check_run_dir(Path(path))
        self.root = self.dir.root
        self._readers: dict[Path, StoreReader] = {}

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r})"

    @cached_property
    def config(self) -> RunConfig:
        """The run's resolved configuration (RUN/config.yaml)."""
        return load_config(self.dir.config_file)

    def stores(self) -> list[Path]:
        """The BP stores of frames written so far (`stream/agg-*.bp`)."""
        return [path for path in self.dir.aggregator_stores() if (path / "md.idx").exists()]

    # ----------------------------------------------------------------------- frames

    def frames(self, fields: Fields = None, sims: Sequence[int] | None = None) -> Batch:
        """Every stored frame so far: a dict of arrays, one row per frame in store and arrival
        order; `fields` (default all) of simulations `sims` (default all).

        A field whose frame shape differs between frames (starting structures of different
        sizes: all_positions, velocities) is an object array of per-frame arrays."""
        wanted = _with_sim_id(fields, sims)
        stores = (read_store(path, wanted, ragged=True) for path in self.stores())
        batch = concat_ragged([b for b in stores if b])
        return _select(batch, fields, sims)

    def new_frames(self, fields: Fields = None, sims: Sequence[int] | None = None) -> Batch:
        """The frames stored since the previous call (the first call: every frame so far).

        Reads only the new steps of each store; changing `fields` between calls keeps the
        position reached in each store. Fields of several frame shapes: as in `frames`."""
        wanted = _with_sim_id(fields, sims)
        batches = [batch for path in self.stores()
                   for batch in self._reader(path, wanted).read_new()]
        return _select(concat_ragged(batches), fields, sims)

    def _reader(self, path: Path, variables: list[str] | None) -> StoreReader:
        """The incremental reader of one store for `variables` (positioned where the last one
        of that store stopped)."""
        reader = self._readers.get(path)
        if reader is not None and reader.variables == variables:
            return reader
        streams = self.config.streams
        fresh = StoreReader(self.dir.adios_xml, streams.aggregator_io, path,
                            streams.liveness_timeout_s, variables=variables)
        if reader is not None:
            fresh.steps_read = reader.steps_read
            reader.close()
        self._readers[path] = fresh
        return fresh

    def close(self) -> None:
        """Close the incremental readers (`new_frames` starts over afterwards)."""
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------- the rest

    def catalog(self) -> list[OutlierRecord]:
        """The records of the newest readable catalog version (empty before the first)."""
        return OutlierCatalog(self.dir.catalog_file).load_last_good().records

    def models(self) -> list[dict[str, Any]]:
        """Published model versions, oldest first: their meta.json plus `version` and `path`."""
        return [{**_meta(path), "version": number, "path": path}
                for number, path in list_versions(self.dir.model_dir)]

    def load_model(self, version: int | None = None) -> LatentModel:
        """A published model (default: the one LATEST names), ready to `encode`."""
        from ddmd_stream.ml.base import load_model

        return load_model(self._model_path(version))

    def _model_path(self, version: int | None) -> Path:
        if version is None:
            latest = latest_version(self.dir.model_dir)
            if latest is None:
                raise ModelError(f"{self.dir.model_dir}: no model published yet")
            return latest[1]
        path = self.dir.model_dir / version_name(version)
        if not path.is_dir():
            published = [number for number, _ in list_versions(self.dir.model_dir)]
            raise ModelError(f"{path}: no model version {version} (published: {published})")
        return path

    def events(self) -> list[dict[str, Any]]:
        """Every task's events, ordered by time (`ddmd_stream.events`)."""
        return read_run_events(self.root)

    def summary(self) -> dict[str, Any]:
        """What the report summarizes (its summary.json), computed now."""
        from ddmd_stream.report.load import load_run
        from ddmd_stream.report.metrics import summarize

        return summarize(load_run(self.root))

    def lineage(self) -> list[dict[str, Any]]:
        """One row per restart (`ddmd_stream.lineage`)."""
        return lineage(self.root)


def _with_sim_id(fields: Fields, sims: Sequence[int] | None) -> list[str] | None:
    """The variables to read: `fields` (None: all), plus sim_id when filtering by it."""
    if fields is None:
        return None
    wanted = list(fields)
    return [*wanted, SIM_ID] if sims is not None and SIM_ID not in wanted else wanted


def _select(batch: Batch, fields: Fields, sims: Sequence[int] | None) -> Batch:
    """The frames of simulations `sims` (all when None), only `fields` (all when None)."""
    if not batch:
        return {}
    names = list(batch) if fields is None else list(fields)
    if sims is None:
        return {name: batch[name] for name in names}
    keep = np.isin(batch[SIM_ID], np.asarray(list(sims), dtype=np.int64))
    return {name: batch[name][keep] for name in names}


def _meta(path: Path) -> dict[str, Any]:
    """meta.json of a version folder ({} when it is missing or broken)."""
    try:
        return read_meta(path)
    except (OSError, ValueError) as error:
        logger.warning("%s: no readable meta.json (%s)", path, error)
        return {}
