"""Tests of ddmd_stream.atomic: replacement is all or nothing and leaves no temporary files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ddmd_stream import atomic
from ddmd_stream.ml.registry import LATEST_TMP_PREFIX


class Boom(Exception):
    pass


@pytest.mark.parametrize("durable", [True, False])
def test_atomic_write_replaces_bytes_and_text(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "status.json"
    atomic.atomic_write(target, b"\x00old", durable=durable)
    assert target.read_bytes() == b"\x00old"
    atomic.atomic_write(target, "néu\n", durable=durable)
    assert target.read_text(encoding="utf-8") == "néu\n"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_failed_write_keeps_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "catalog.pkl"
    target.write_bytes(b"old")

    def fail(*_args: object) -> None:
        raise Boom

    monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(Boom):
        atomic.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["catalog.pkl"]


def test_atomic_path_exception_midway_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "task.yaml"
    target.write_text("old: 1\n")
    with pytest.raises(Boom), atomic.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".task.tmp-")
        assert tmp.suffix == ".yaml"
        with open(tmp, "w") as out:
            out.write("new: ")  # half written
        assert target.read_text() == "old: 1\n"  # readers see the old file meanwhile
        raise Boom
    assert target.read_text() == "old: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["task.yaml"]


def test_atomic_path_for_a_writer_that_needs_a_name(tmp_path: Path) -> None:
    target = tmp_path / "state.npz"
    for value in (1, 2):
        with atomic.atomic_path(target) as tmp:
            np.savez(tmp, step=value)
        with np.load(target) as data:
            assert int(data["step"]) == value
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]


def test_temp_names_are_unique_and_match_the_prefix(tmp_path: Path) -> None:
    names = {atomic.temp_path(tmp_path / "LATEST").name for _ in range(3)}
    assert len(names) == 3
    assert all(name.startswith(LATEST_TMP_PREFIX) for name in names)
    assert LATEST_TMP_PREFIX == ".LATEST.tmp-"


def test_fsync_helpers(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_text("x")
    atomic.fsync_tree(tmp_path)
    atomic.fsync_path(tmp_path / "a" / "b" / "f")
    atomic.fsync_path(tmp_path / "a")
    atomic.fsync_dir(tmp_path / "missing")  # best effort for folders
    with pytest.raises(FileNotFoundError):
        atomic.fsync_path(tmp_path / "missing-file")
