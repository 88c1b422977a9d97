"""The outlier catalog: concurrent publishing and reading, hostile and broken files, restarts."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from ddmd_stream.catalog import (
    Catalog,
    CatalogError,
    OutlierCatalog,
    OutlierRecord,
    pick_restart,
)

PUBLISHERS, PUBLISHES, READERS = 2, 250, 3


def _records(writer: int, i: int) -> list[OutlierRecord]:
    """A self-checking payload: its size and values say which publish it came from."""
    value = writer * 10_000 + i
    return [
        OutlierRecord(sim_id=writer, step=i, rmsd=float(value), score=float(k),
                      positions=np.full((22, 3), value, np.float32),
                      velocities=np.full((22, 3), -value, np.float32) if k % 2 else None)
        for k in range(1 + i % 4)
    ]


def _check(catalog: Catalog) -> None:
    if not catalog.records:
        assert catalog.version == 0
        return
    first = catalog.records[0]
    assert len(catalog.records) == 1 + first.step % 4
    for k, record in enumerate(catalog.records):
        assert (record.sim_id, record.step, record.score) == (first.sim_id, first.step, k)
        assert np.all(record.positions == record.rmsd)
        if k % 2:
            assert np.all(record.velocities == -record.rmsd)
        else:
            assert record.velocities is None


def _publisher(path: str, writer: int, results: multiprocessing.Queue) -> None:
    try:
        catalog = OutlierCatalog(Path(path))
        versions = [catalog.publish(_records(writer, i)) for i in range(PUBLISHES)]
        results.put(("publisher", writer, versions, None))
    except BaseException:
        results.put(("publisher", writer, [], traceback.format_exc()))


def _reader(path: str, reader: int, final: int, results: multiprocessing.Queue) -> None:
    try:
        catalog, seen, reads = OutlierCatalog(Path(path)), [], 0
        end = time.monotonic() + 60
        while time.monotonic() < end:
            loaded = catalog.load()
            reads += 1
            _check(loaded)
            if seen and loaded.version < seen[-1]:
                raise AssertionError(f"version went back: {seen[-1]} -> {loaded.version}")
            if not seen or loaded.version != seen[-1]:
                seen.append(loaded.version)
            if loaded.version == final:
                break
            time.sleep(0.002)  # leave the (shared) CPUs to the publishers
        results.put(("reader", reader, [reads, *seen], None))
    except BaseException:
        results.put(("reader", reader, [], traceback.format_exc()))


def test_concurrent_publishers_and_readers(tmp_path: Path) -> None:
    path = str(tmp_path / "outliers.pkl")
    total = PUBLISHERS * PUBLISHES
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    processes = [spawn.Process(target=_reader, args=(path, r, total, results))
                 for r in range(READERS)]
    processes += [spawn.Process(target=_publisher, args=(path, w, results))
                  for w in range(PUBLISHERS)]
    for process in processes:
        process.start()
    got = []
    try:
        for _ in processes:
            got.append(results.get(timeout=90))
    except queue.Empty:
        pytest.fail(f"only {len(got)} of {len(processes)} processes reported: {got}")
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    errors = [error for *_, error in got if error]
    assert not errors, errors[0]
    assert all(process.exitcode == 0 for process in processes)

    published = sorted(v for role, _, versions, _ in got if role == "publisher" for v in versions)
    assert published == list(range(1, total + 1))  # every publish got its own version
    reads = [versions for role, _, versions, _ in got if role == "reader"]
    assert all(seen[-1] == total for seen in reads)  # every reader reached the last version
    rounds = total + sum(seen[0] for seen in reads)
    assert rounds >= 1000 and all(seen[0] >= 50 for seen in reads), rounds
    final = OutlierCatalog(Path(path)).load()
    assert final.version == total
    _check(final)
    assert final.records[0].step == PUBLISHES - 1  # the last publish of some publisher
    leftovers = [p.name for p in tmp_path.iterdir()
                 if p.name not in ("outliers.pkl", "outliers.pkl.prev", "outliers.pkl.lock")]
    assert not leftovers  # no temporary files left behind


def test_round_trip_and_empty(tmp_path: Path) -> None:
    catalog = OutlierCatalog(tmp_path / "sub" / "outliers.pkl")
    assert catalog.load() == Catalog.empty() and catalog.version() == 0
    assert catalog.load_last_good().version == 0
    records = _records(3, 7)
    assert catalog.publish(records) == 1
    loaded = catalog.load()
    assert loaded.version == 1 and loaded.created > 0 and len(loaded.records) == 4
    for mine, theirs in zip(records, loaded.records, strict=True):
        assert theirs.positions.dtype == np.float32
        np.testing.assert_array_equal(theirs.positions, mine.positions)
        assert (theirs.sim_id, theirs.step, theirs.rmsd, theirs.created) == (
            mine.sim_id, mine.step, mine.rmsd, mine.created)
    assert catalog.publish([]) == 2 and catalog.load().records == []


class _Hostile:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Eval:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


def test_hostile_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outliers.pkl"
    marker = tmp_path / "pwned"
    catalog = OutlierCatalog(path)
    payloads = {
        "system": _Hostile(f"touch {marker}"),
        "nested": {"version": 3, "records": [{"sim_id": _Hostile(f"touch {marker}")}]},
        "eval": _Eval(),
        "other class": {"version": 1, "records": [], "x": __import__("collections").Counter()},
    }
    for name, payload in payloads.items():
        path.write_bytes(pickle.dumps(payload))
        with pytest.raises(CatalogError, match="refused to load") as refused:
            catalog.load()
        message = str(refused.value)
        assert message.startswith(str(path)) and "\n" not in message, name
    assert not marker.exists()


def test_truncated_file_keeps_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "outliers.pkl"
    catalog = OutlierCatalog(path)
    catalog.publish(_records(0, 1))
    catalog.publish(_records(0, 2))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(CatalogError, match="corrupt or truncated") as broken:
        catalog.load()
    assert str(broken.value).startswith(str(path))
    previous = catalog.load_last_good()
    assert previous.version == 1 and previous.records[0].step == 1

    assert catalog.publish(_records(1, 3)) == 3  # never reuses the broken file's version
    assert catalog.load().version == 3 and catalog.load().records[0].step == 3
    assert len(list(tmp_path.glob("outliers.pkl.corrupt-*"))) == 1  # kept for inspection

    for garbage in (b"", b"not a pickle at all", pickle.dumps([1, 2, 3]),
                    pickle.dumps({"version": "x", "records": []}),
                    pickle.dumps({"version": 1, "records": [{"bad": 1}]})):
        path.write_bytes(garbage)
        with pytest.raises(CatalogError) as error:
            catalog.load()
        assert str(error.value).startswith(str(path)), garbage


def test_readers_never_wait_for_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "outliers.pkl"
    catalog = OutlierCatalog(path, lock_timeout_s=0.2)
    catalog.publish(_records(0, 0))
    with FileLock(str(path) + ".lock"):  # another publisher holds the lock
        started = time.monotonic()
        assert catalog.load().version == 1
        assert time.monotonic() - started < 0.1
        with pytest.raises(CatalogError, match="lock held"):
            catalog.publish(_records(0, 1))
    assert catalog.publish(_records(0, 1)) == 2


def test_pick_restart_policies() -> None:
    records = [OutlierRecord(sim_id=0, step=s, positions=np.zeros((1, 3)), rmsd=r)
               for s, r in ((10, 3.0), (20, 1.0), (30, 2.0))]
    catalog = Catalog(1, 0.0, records)
    rng = np.random.default_rng(0)
    assert [pick_restart(catalog, i, "rank", rng).step for i in range(4)] == [20, 30, 10, 20]
    picks = [pick_restart(catalog, 0, "random", np.random.default_rng(i)).step for i in range(60)]
    assert set(picks) == {10, 20, 30}
    again = [pick_restart(catalog, 0, "random", np.random.default_rng(i)).step for i in range(60)]
    assert picks == again  # reproducible with a seeded generator
    assert pick_restart(Catalog.empty(), 0, "rank", rng) is None
    with pytest.raises(ValueError, match="restart policy"):
        pick_restart(catalog, 0, "best", rng)
