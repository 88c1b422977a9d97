"""Atomic publishing of model versions into a directory; readers never see partial models.

Layout of `model_dir`:

    v0001/ v0002/ ...   complete versions (the saved model files + meta.json), never modified
    LATEST              text file naming the newest complete version directory ("v0002")
    .tmp-<uuid>/        a publish in progress (or left over by a crash; ignored by readers)

A publish writes everything into `.tmp-<uuid>/`, fsyncs it, renames it to the next `vNNNN`
and only then atomically replaces `LATEST` (`ddmd_stream.atomic.atomic_write`). Readers
follow `LATEST` only, so they always land in a complete, renamed directory. One writer per
`model_dir` is assumed (the trainer); a racing second writer gets the next free number.

No TensorFlow here: `save` is a callback (e.g. `CVAE.save`) supplied by the caller.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ddmd_stream.atomic import atomic_write, fsync_dir, fsync_tree, temp_prefix

logger = logging.getLogger(__name__)

LATEST_FILE = "LATEST"
VERSION_META_FILE = "meta.json"  # the registry's record of a published version (not model.json)
TMP_PREFIX = ".tmp-"
LATEST_TMP_PREFIX = temp_prefix(LATEST_FILE)  # ".LATEST.tmp-": LATEST being replaced
_VERSION_RE = re.compile(r"^v(\d{4,})$")


def version_name(version: int) -> str:
    return f"v{version:04d}"


def parse_version(name: str) -> int | None:
    """`"v0012"` → 12; None for anything else."""
    match = _VERSION_RE.match(name)
    return int(match.group(1)) if match else None


def list_versions(model_dir: Path) -> list[tuple[int, Path]]:
    """All complete version directories, oldest first (tmp dirs and other files ignored)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    versions = []
    for entry in model_dir.iterdir():
        number = parse_version(entry.name)
        if number is not None and entry.is_dir():
            versions.append((number, entry))
    return sorted(versions)


def _next_version(model_dir: Path) -> int:
    existing = [number for number, _ in list_versions(model_dir)]
    latest = latest_version(model_dir)
    if latest is not None:
        existing.append(latest[0])
    return max(existing, default=0) + 1


def publish_model(model_dir: Path, save: Callable[[Path], None], metadata: dict[str, Any]) -> int:
    """Publish a new model version; returns its number once LATEST names it.

    `save(tmp_dir)` writes the model files into an existing, empty directory. `metadata` (JSON
    serialisable) goes into meta.json together with `version`, `name`, `created` (epoch s)
    and `created_iso`.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        save(tmp)
        created = time.time()
        meta = {
            **metadata,
            "created": created,
            "created_iso": datetime.fromtimestamp(created, UTC).isoformat(),
        }
        version = _next_version(model_dir)
        while True:
            meta.update(version=version, name=version_name(version))
            (tmp / VERSION_META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
            fsync_tree(tmp)  # the model files and meta.json, before the rename publishes them
            target = model_dir / version_name(version)
            if target.exists():  # another writer took this number
                version += 1
                continue
            try:
                os.rename(tmp, target)  # fails on an existing non-empty directory
            except OSError:
                if target.exists():
                    version += 1
                    continue
                raise
            break
        fsync_dir(model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _set_latest(model_dir, version)
    logger.info("published model %s in %s", version_name(version), model_dir)
    return version


def _set_latest(model_dir: Path, version: int) -> None:
    """Atomically point LATEST at `version` (never backwards if a newer one is there)."""
    current = _read_latest_name(model_dir)
    current_number = parse_version(current) if current else None
    if current_number is not None and current_number > version:
        logger.warning("not moving LATEST back from %s to %s", current, version_name(version))
        return
    atomic_write(model_dir / LATEST_FILE, version_name(version) + "\n")


def _read_latest_name(model_dir: Path) -> str | None:
    try:
        name = (Path(model_dir) / LATEST_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return name or None


def latest_version(model_dir: Path) -> tuple[int, Path] | None:
    """(version, directory) that LATEST names, or None when nothing is published yet."""
    model_dir = Path(model_dir)
    name = _read_latest_name(model_dir)
    if name is None:
        return None
    number = parse_version(name)
    path = model_dir / name
    if number is None or not path.is_dir():
        logger.warning(
            "%s names %r, which is not a published version", model_dir / LATEST_FILE, name
        )
        return None
    return number, path


def read_meta(version_path: Path) -> dict[str, Any]:
    """meta.json of a published version directory."""
    return json.loads((Path(version_path) / VERSION_META_FILE).read_text())


def clean_stale_tmp(model_dir: Path, min_age_s: float = 0.0) -> int:
    """Remove leftover `.tmp-*` dirs / LATEST temp files older than `min_age_s`; returns count.

    Call it from the (single) writer, e.g. at start-up; a positive `min_age_s` spares the
    directory of a publish that another process may still be writing.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return 0
    now = time.time()
    removed = 0
    for entry in model_dir.iterdir():
        if not entry.name.startswith((TMP_PREFIX, LATEST_TMP_PREFIX)):
            continue
        try:
            if now - entry.stat().st_mtime < min_age_s:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue
        removed += 1
        logger.info("removed stale %s", entry)
    return removed


def prune_versions(model_dir: Path, keep: int) -> list[int]:
    """Delete all but the newest `keep` versions (never the one LATEST names); returns removed.

    Readers that opened an old version a moment ago may lose it; keep a few for them.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    latest = latest_version(model_dir)
    versions = list_versions(model_dir)
    removed = []
    for number, path in versions[:-keep]:
        if latest is not None and number == latest[0]:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(number)
    return removed
