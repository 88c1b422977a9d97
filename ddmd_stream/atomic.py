"""Atomic file replacement: write a temporary file, (fsync,) `os.replace`, (fsync the folder).

A reader of the target path sees the old or the new content, never a half-written file: the
temporary file lives in the target's folder (so the rename stays on one file system) under a
unique name `.<stem>.tmp-<hex><suffix>` (the suffix kept for writers such as `np.savez` that
add one), and it is removed again when writing fails.

- `atomic_write(path, data)`: replace `path` by bytes or text.
- `atomic_path(path)`: a context manager yielding the temporary path, for writers that need a
  file name (`np.savez`, `yaml.dump` into an open file, ...); replaces `path` on a clean exit.
- `durable=True` (default) also fsyncs the file before and its folder after the rename, so the
  new content survives a crash of the machine; `durable=False` only guarantees atomicity (for
  frequently rewritten, disposable files such as heartbeats).
- `fsync_path`, `fsync_dir`, `fsync_tree`: the fsyncs on their own (directories best effort:
  not every platform or file system can fsync a directory).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

TMP_INFIX = ".tmp-"


def temp_prefix(path: str | Path) -> str:
    """The name prefix of `path`'s temporary files: `.<stem>.tmp-` (e.g. `.LATEST.tmp-`)."""
    return f".{Path(path).stem}{TMP_INFIX}"


def temp_path(path: str | Path) -> Path:
    """A fresh temporary path next to `path`: `.<stem>.tmp-<hex><suffix>`."""
    path = Path(path)
    return path.with_name(f"{temp_prefix(path)}{uuid.uuid4().hex}{path.suffix}")


def atomic_write(path: str | Path, data: bytes | str, durable: bool = True) -> None:
    """Replace `path` by `data` (str is written as UTF-8) so that readers never see a part."""
    with atomic_path(path, durable) as tmp:
        Path(tmp).write_bytes(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def atomic_path(path: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it replaces `path`, else it is removed.

    The body must leave a complete file at the yielded path (and close it). Whatever else the
    body does runs before the rename, e.g. keeping a copy of the old version.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        if durable:
            fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_path(path: str | Path) -> None:
    """fsync a file (errors raise) or a directory (best effort, see `fsync_dir`)."""
    path = Path(path)
    if path.is_dir():
        fsync_dir(path)
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | Path) -> None:
    """fsync a directory, so that renames and new entries in it are durable (best effort)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError as error:
        logger.debug("cannot open %s to fsync it: %s", folder, error)
        return
    try:
        os.fsync(fd)
    except OSError as error:
        logger.debug("cannot fsync directory %s: %s", folder, error)
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file and directory below `root`, `root` included."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fsync_path(Path(dirpath) / name)
        fsync_dir(dirpath)
