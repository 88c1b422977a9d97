"""The ADIOS2 stream layer with real SST and BP5 engines (no mocks).

Writers run in subprocesses (blocking ADIOS calls hold the GIL), readers in the test process.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from ddmd_stream.streams import (
    FrameReader,
    FrameWriter,
    MissingVariables,
    StoreReader,
    StreamError,
    StreamOpenError,
    StreamPoller,
    WriterDied,
    WriterInfo,
    clean_stale_contact_files,
    concat_batches,
    contact_file,
    describe_store,
    engine_type,
    main,
    read_rows,
    read_store,
    stream_ready,
)

os.environ.setdefault("ADIOS2_IP", "127.0.0.1")  # loopback, also for the writer subprocesses

REPO = Path(__file__).resolve().parent.parent
SST_XML = REPO / "adios_xml" / "sst.xml"
BP5_XML = REPO / "adios_xml" / "bp5.xml"
XMLS = pytest.mark.parametrize("xml", [SST_XML, BP5_XML], ids=["sst", "bp5"])

# A writer process: FrameWriter with the given XML; one JSON line per event on stdout.
WRITER = r"""
import json, os, sys, time
import numpy as np
from ddmd_stream.streams import FrameWriter
a = json.loads(sys.argv[1])
def say(event, **kw):
    print(json.dumps({"event": event, "t": time.time(), **kw}), flush=True)
w = FrameWriter(a["xml"], a["io"], a["path"], open_timeout_s=a["open_timeout_s"],
                append=a["append"], stop_file=a.get("stop_file"))
say("opened")
for i in range(a["first"], a["first"] + a["n"]):
    time.sleep(a["delay"])
    k = a["frames"]
    w.write({
        "id": np.full(k, i, np.int64),
        "positions": np.full((k, 7, 3), i, np.float32),
        "contact_map": np.eye(7, dtype=bool)[None].repeat(k, 0),
        "rmsd": np.full(k, i / 10, np.float64),
    })
    say("wrote", i=i)
if a["hold"]:
    say("held")
    time.sleep(600)
while a["close_after"] and not os.path.exists(a["close_after"]):
    time.sleep(0.02)
w.close()
say("closed")
"""


def start_writer(path: Path, xml: Path, n: int, **options: object) -> subprocess.Popen:
    args = {"xml": str(xml), "io": "SimulationOutput", "path": str(path), "n": n, "first": 0,
            "frames": 1, "delay": 0.0, "hold": False, "append": False, "open_timeout_s": 30.0,
            "close_after": None, **options}
    return subprocess.Popen([sys.executable, "-c", WRITER, json.dumps(args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def events(process: subprocess.Popen, until: str | None = None) -> list[dict]:
    """The writer's events, up to `until` (reading on) or to the end (waiting for exit)."""
    out = []
    for line in process.stdout:
        out.append(json.loads(line))
        if out[-1]["event"] == until:
            break
    return out


def wait_ready(path: Path, xml: Path, process: subprocess.Popen, timeout_s: float = 20) -> None:
    engine = engine_type(xml, "SimulationOutput")
    end = time.monotonic() + timeout_s
    while stream_ready(path, engine) is None:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < end, f"{path} not opened by its writer"
        time.sleep(0.02)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)
    process.stdout.close()
    process.stderr.close()


def read_to_end(
    reader: FrameReader, timeout_s: float = 20, pause_s: float = 0.0
) -> tuple[list[dict], list[float]]:
    """Every batch until the stream ends, and when each was read (pausing after each)."""
    batches, times = [], []
    end = time.monotonic() + timeout_s
    while not reader.ended:
        assert time.monotonic() < end, "stream did not end"
        batch = reader.next(0.2)
        if batch is not None:
            batches.append(batch)
            times.append(time.time())
            time.sleep(pause_s)
    return batches, times


# --------------------------------------------------------------------------- one stream


@XMLS
def test_same_code_over_sst_and_bp5(tmp_path: Path, xml: Path) -> None:
    path = tmp_path / "sim-0000"
    contact_file(path).write_text("stale contact information from a crashed run\n")
    writer = start_writer(path, xml, n=10, frames=2)
    try:
        wait_ready(path, xml, writer)
        with FrameReader(xml, "SimulationOutput", path, open_timeout_s=20) as reader:
            assert reader.engine_name == xml.stem  # the engine came from the XML alone
            batches, _ = read_to_end(reader)
        assert writer.wait(timeout=20) == 0, writer.stderr.read()
    finally:
        stop(writer)
    data = concat_batches(batches)
    assert len(batches) == 10 and reader.steps_read == 10
    assert data["id"].tolist() == [i for i in range(10) for _ in range(2)]
    assert data["positions"].dtype == np.float32 and data["positions"].shape == (20, 7, 3)
    assert np.array_equal(data["positions"][:, 0, 0], data["id"].astype(np.float32))
    assert data["contact_map"].dtype == np.uint8  # bool travels as uint8
    assert np.array_equal(data["contact_map"][5], np.eye(7, dtype=np.uint8))
    np.testing.assert_allclose(data["rmsd"], data["id"] / 10)
    assert not contact_file(path).exists()  # the stale one was removed, SST's own cleaned up
    assert not WriterInfo.sidecar(path).exists()  # a clean close removes the sidecar


def test_sst_writer_blocks_when_queue_full(tmp_path: Path) -> None:
    text = SST_XML.read_text()
    assert '"QueueLimit" value="8"' in text
    xml = tmp_path / "queue2.xml"
    xml.write_text(text.replace('"QueueLimit" value="8"', '"QueueLimit" value="2"'))
    path, n, limit, pause = tmp_path / "sim-0000", 8, 2, 0.25
    writer = start_writer(path, xml, n=n)
    try:
        wait_ready(path, xml, writer)
        with FrameReader(xml, "SimulationOutput", path, open_timeout_s=20) as reader:
            batches, read = read_to_end(reader, pause_s=pause)
        written = {e["i"]: e["t"] for e in events(writer) if e["event"] == "wrote"}
        assert writer.wait(timeout=20) == 0
    finally:
        stop(writer)
    assert [int(b["id"][0]) for b in batches] == list(range(n))  # resumed; nothing dropped
    # With the queue full, step k is queued only after the reader took older steps
    # (k - limit - 2 is a bound that allows for the reader's own look-ahead).
    for k in range(limit + 2, n):
        assert written[k] >= read[k - limit - 2], f"step {k} written before the queue drained"
    # Paced by the reader: once the queue is full, writes come about one reader pause apart.
    gaps = np.diff([written[k] for k in range(limit + 1, n)])
    assert np.median(gaps) > 0.6 * pause, gaps
    assert written[n - 1] - written[0] > 0.6 * pause * (n - limit - 2)


@XMLS
def test_reader_learns_of_killed_writer(tmp_path: Path, xml: Path) -> None:
    path = tmp_path / "sim-0000"
    writer = start_writer(path, xml, n=3, hold=True)
    try:
        wait_ready(path, xml, writer)
        reader = FrameReader(xml, "SimulationOutput", path, open_timeout_s=20,
                             liveness_timeout_s=1.0)
        got = []
        while len(got) < 3:
            batch = reader.next(1.0)
            if batch is not None:
                got.append(int(batch["id"][0]))
        events(writer, until="held")
        assert reader.next(0.1) is None and not reader.ended  # alive, just quiet
        writer.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        with pytest.raises(WriterDied, match="sim-0000"):
            while time.monotonic() - killed < 10:
                reader.next(0.1)
        detected = time.monotonic() - killed
        reader.close()
    finally:
        stop(writer)
    assert got == [0, 1, 2] and not reader.ended
    assert detected < (2.0 if xml == SST_XML else 1.0), detected
    if xml == BP5_XML:  # what the dead writer wrote stays readable by the tools
        assert describe_store(path) == [
            ("contact_map", "uint8", "(7, 7)", 3, 3), ("id", "int64", "()", 3, 3),
            ("positions", "float32", "(7, 3)", 3, 3), ("rmsd", "float64", "()", 3, 3)]


def test_file_writer_on_another_host_dies_after_liveness_timeout(tmp_path: Path) -> None:
    """Off-host a pid means nothing: the reader goes by the sidecar's age."""
    path, liveness = tmp_path / "sim-0000", 1.0
    writer = start_writer(path, BP5_XML, n=2, hold=True)
    try:
        events(writer, until="held")
        with FrameReader(BP5_XML, "SimulationOutput", path, liveness_timeout_s=liveness) as reader:
            assert reader.next(1.0) is not None and reader.next(1.0) is not None
            writer.kill()
            writer.wait()
            info = WriterInfo.read(path)
            WriterInfo(info.pid, "elsewhere", info.token, info.started).write(path)
            last_heartbeat = time.monotonic()
            assert reader.next(0.1) is None  # heartbeat fresh: still taken as alive
            with pytest.raises(WriterDied, match="elsewhere"):
                while time.monotonic() - last_heartbeat < 10:
                    reader.next(0.1)
            detected = time.monotonic() - last_heartbeat
    finally:
        stop(writer)
    assert liveness * 0.8 < detected < liveness + 1.0, detected


# --------------------------------------------------------------------------- many streams


@XMLS
def test_one_poller_serves_four_streams_round_robin(tmp_path: Path, xml: Path) -> None:
    n, keys = 40, [0, 1, 2, 3]  # ~2 s of writing each: rounds overlap even on a busy machine
    paths = {key: tmp_path / f"sim-{key:04d}" for key in keys}
    release = tmp_path / "all-read"
    writers = [start_writer(paths[key], xml, n=n, first=key * 100, delay=0.05,
                            close_after=str(release)) for key in keys]
    poller = StreamPoller(xml, "SimulationOutput", paths, open_timeout_s=20, liveness_timeout_s=5)
    got: dict[int, list[int]] = {key: [] for key in keys}
    rounds_serving_several = most_open = 0
    try:
        end = time.monotonic() + 120  # a busy machine: pumps start a forkserver (adios2 import)
        while not all(source.ends for source in poller.sources):
            assert time.monotonic() < end, {k: len(v) for k, v in got.items()}
            batches = poller.poll()
            for key, batch in batches:
                got[key].extend(batch["id"].tolist())
            rounds_serving_several += len({key for key, _ in batches}) > 1
            most_open = max(most_open, poller.open_count)
            if all(len(ids) == n for ids in got.values()):
                release.touch()  # writers close only now: all four streams were open at once
            if not batches:
                time.sleep(0.01)
        for writer in writers:
            assert writer.wait(timeout=20) == 0, writer.stderr.read()
    finally:
        poller.close()
        for writer in writers:
            stop(writer)
    assert got == {key: list(range(key * 100, key * 100 + n)) for key in keys}
    assert most_open == 4 and rounds_serving_several > 0
    assert [(s.frames, s.ends, s.deaths) for s in poller.sources] == [(n, 1, 0)] * 4


# --------------------------------------------------------------------------- open, clean, loopback


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_stale_contact_files_are_cleaned(tmp_path: Path) -> None:
    host = socket.gethostname()
    orphan, dead, live = (tmp_path / f"sim-{i:04d}" for i in range(3))
    for stream in (orphan, dead, live):
        contact_file(stream).write_text("#ADIOS2-SST v0\n0x0:stale\n")
    WriterInfo(_dead_pid(), host, "t1", 0.0).write(dead)
    WriterInfo(os.getpid(), host, "t2", 0.0).write(live)
    removed = clean_stale_contact_files(tmp_path)
    assert sorted(removed) == [contact_file(orphan), contact_file(dead)]
    assert contact_file(live).exists()

    # A poller does not try to connect to a contact file whose writer is dead.
    poller = StreamPoller(SST_XML, "SimulationOutput", {7: dead}, open_timeout_s=5)
    contact_file(dead).write_text("#ADIOS2-SST v0\n0x0:stale\n")
    assert poller.poll() == [] and poller.sources[0].deaths == 1 and poller.open_count == 0

    # A writer removes a stale contact file of its own stream before it opens.
    path = tmp_path / "agg-0000.bp"
    contact_file(path).write_text("stale")
    with FrameWriter(BP5_XML, "AggregatorOutput", path) as writer:
        assert not contact_file(path).exists()
        assert WriterInfo.read(path) == writer.info


def test_writer_without_reader_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "sim-0007"
    started = time.monotonic()
    writer = start_writer(path, SST_XML, n=1, open_timeout_s=1.0)
    try:
        code = writer.wait(timeout=15)
        elapsed = time.monotonic() - started
        stderr = writer.stderr.read()
    finally:
        stop(writer)
    assert code == -signal.SIGTERM and elapsed < 6, (code, elapsed)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0] and "no reader" in errors[0], stderr
    assert "open_timeout_s" in errors[0]
    # The killed writer left its contact file behind; the next start cleans it.
    assert clean_stale_contact_files(tmp_path) == [contact_file(path)]


def test_writer_blocked_in_open_honours_stop(tmp_path: Path) -> None:
    """A simulation waiting for a reader that will never come ends as soon as STOP appears."""
    path, stop_file = tmp_path / "sim-0003", tmp_path / "STOP"
    writer = start_writer(path, SST_XML, n=1, open_timeout_s=300.0, stop_file=str(stop_file))
    try:
        wait_ready(path, SST_XML, writer)  # its open is blocked now: no reader
        stop_file.write_text("test\n")
        stopped = time.monotonic()
        code = writer.wait(timeout=30)
        elapsed = time.monotonic() - stopped
        stderr = writer.stderr.read()
    finally:
        stop(writer)
    assert code in (-signal.SIGTERM, -signal.SIGKILL) and elapsed < 6, (code, elapsed)
    assert "appeared while blocked" in stderr and str(path) in stderr, stderr


SEED_CHILD = r"""
import os, socket, sys, time
from pathlib import Path
from ddmd_stream.streams import SEED_REGISTRY, reserve_evpath_seed
folder, other, dead = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
registry = folder / SEED_REGISTRY
registry.mkdir()
while time.time() % 1.0 > 0.3:
    time.sleep(0.02)
now = time.time()
taken = int(now) + os.getpid()
(registry / str(taken)).write_text(f"{socket.gethostname()} {other}")  # a live process
(registry / "12345").write_text(f"{socket.gethostname()} {dead}")  # a dead one
seed = reserve_evpath_seed(folder)
print(seed - taken, round(time.time() - now, 2), sorted(p.name for p in registry.iterdir()))
"""


def test_processes_sharing_a_folder_get_distinct_evpath_seeds(tmp_path: Path) -> None:
    """EVPath seeds its process id with second + pid: a taken seed makes the process wait."""
    done = subprocess.run([sys.executable, "-c", SEED_CHILD, str(tmp_path), str(os.getpid()),
                           str(_dead_pid())], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    offset, waited, files = done.stdout.split(maxsplit=2)
    assert int(offset) == 1 and 0.6 < float(waited) < 1.5  # the next second's seed
    assert "12345" not in files  # the dead process's seed was freed


def _ipv4_bytes(address: str) -> tuple[bytes, bytes]:
    packed = socket.inet_aton(address)
    return packed, packed[::-1]


def test_sst_traffic_stays_on_loopback(tmp_path: Path) -> None:
    path = tmp_path / "sim-0000"
    writer = start_writer(path, SST_XML, n=3, hold=True)
    try:
        wait_ready(path, SST_XML, writer)
        # The contact file is what a reader connects to: it must advertise loopback only.
        text = contact_file(path).read_text()
        assert text.startswith("#ADIOS2-SST")
        advertised = base64.b64decode(text.strip().rsplit(":", 1)[1])
        assert any(b in advertised for b in _ipv4_bytes("127.0.0.1")), advertised.hex()
        for addresses in psutil.net_if_addrs().values():
            for address in addresses:
                if address.family == socket.AF_INET and not address.address.startswith("127."):
                    assert not any(b in advertised for b in _ipv4_bytes(address.address)), address
        with FrameReader(SST_XML, "SimulationOutput", path, open_timeout_s=20) as reader:
            assert reader.next(5.0) is not None
            events(writer, until="held")
            connections = psutil.Process(writer.pid).net_connections("inet")
            established = [c for c in connections if c.status == psutil.CONN_ESTABLISHED]
            assert established
            for c in established:
                assert c.laddr.ip in ("127.0.0.1", "::1") and c.raddr.ip in ("127.0.0.1", "::1")
            writer.kill()
    finally:
        stop(writer)


# --------------------------------------------------------------------------- stores


def _write(writer: FrameWriter, *ids: int) -> None:
    for i in ids:
        writer.write({"id": np.array([i], np.int64), "x": np.full((1, 3), i, np.float32)})


def _ids(batches: list[dict]) -> list[int]:
    return [int(i) for b in batches for i in b["id"]]


def test_store_reader_reads_each_step_once_across_writer_restarts(tmp_path: Path) -> None:
    store, io = tmp_path / "agg-0000.bp", "AggregatorOutput"
    reader = StoreReader(BP5_XML, io, store, liveness_timeout_s=1.0)
    assert reader.read_new() == []  # no store yet

    first = FrameWriter(BP5_XML, io, store, append=True)
    _write(first, 0, 1, 2)
    assert _ids(reader.read_new()) == [0, 1, 2]
    assert reader.read_new() == []
    _write(first, 3, 4)
    assert _ids(reader.read_new(max_steps=1)) == [3]
    assert _ids(reader.read_new()) == [4]
    first.close()
    assert reader.read_new() == [] and reader.reader is None  # ended cleanly
    assert reader.read_new() == []  # (one look at the store as closed)
    opens = reader.opens
    for _ in range(3):
        assert reader.read_new() == []
    assert reader.opens == opens  # an unchanged store is not reopened (nor re-read)

    with FrameWriter(BP5_XML, io, store, append=True) as second:  # writer restart: appends
        _write(second, 5, 6)
        assert _ids(reader.read_new()) == [5, 6]

    crashing = subprocess.Popen([sys.executable, "-c", WRITER, json.dumps({
        "xml": str(BP5_XML), "io": io, "path": str(store), "n": 2, "first": 7, "frames": 1,
        "delay": 0.0, "hold": True, "append": True, "open_timeout_s": 30.0, "close_after": None,
    })], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        events(crashing, until="held")
        assert _ids(reader.read_new()) == [7, 8]
        crashing.kill()
        crashing.wait()
        assert reader.read_new() == [] and reader.reader is None  # writer died: closed
    finally:
        stop(crashing)

    with FrameWriter(BP5_XML, io, store, append=True) as third:  # appends after the crash
        _write(third, 9)
    assert _ids(reader.read_new()) == [9]
    reader.close()
    assert reader.steps_read == 10
    assert read_store(store, ["id"])["id"].tolist() == list(range(10))


# --------------------------------------------------------------------------- inspection CLI


def _small_store(path: Path, engine: str = "BP5") -> None:
    xml = BP5_XML
    if engine != "BP5":
        xml = path.with_name(f"{engine}.xml")
        xml.write_text(f'<adios-config><io name="AggregatorOutput"><engine type="{engine}"/>'
                       "</io></adios-config>")
    with FrameWriter(xml, "AggregatorOutput", path) as writer:
        for step in range(3):
            writer.write({"sim_id": np.array([0, 1], np.int32),
                          "positions": np.full((2, 4, 3), step, np.float32)})


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ddmd_stream.streams", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("engine", ["BP5", "BP4"])
def test_cli_ls_and_export(tmp_path: Path, engine: str) -> None:
    store = tmp_path / "agg-0000.bp"
    _small_store(store, engine)
    done = _cli("ls", str(store))
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert set(rows) == {"positions", "sim_id"}
    assert "float32" in rows["positions"] and "(4, 3)" in rows["positions"]
    for row in rows.values():
        assert re.search(r"steps\s+3\s+frames 6$", row), row

    npz = tmp_path / "out.npz"
    assert main(["export", str(store), str(npz), "--vars", "positions"]) == 0
    with np.load(npz) as data:
        assert sorted(data.files) == ["positions"]
        assert data["positions"].shape == (6, 4, 3)
        assert data["positions"][:, 0, 0].tolist() == [0, 0, 1, 1, 2, 2]

    import h5py

    h5 = tmp_path / "out.h5"
    assert main(["export", str(store), str(h5)]) == 0
    with h5py.File(h5) as data:
        assert sorted(data) == ["positions", "sim_id"]
        assert data["sim_id"][:].tolist() == [0, 1] * 3
    assert read_rows(store, 2, [1, 0], ["positions"])["positions"][:, 0, 0].tolist() == [2, 2]


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    done = _cli("ls", str(tmp_path / "nothing.bp"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "not a BP store" in done.stderr

    store = tmp_path / "agg-0000.bp"
    _small_store(store)
    for argv in (["export", str(store), str(tmp_path / "out.csv")],
                 ["export", str(store), str(tmp_path / "out.npz"), "--vars", "velocities"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: "), err
        assert ("out.csv" in err) if argv[2].endswith(".csv") else ("velocities" in err)


def _rows_step(writer: FrameWriter, step: int, frames: int) -> None:
    """A step whose row r holds id 100 * step + r (and x, v derived from it)."""
    ids = 100 * step + np.arange(frames)
    writer.write({"id": ids, "x": np.repeat(ids[:, None], 3, 1).astype(np.float32),
                  "v": np.repeat(-ids[:, None], 4, 1).astype(np.float64)})


def _rchar() -> int:
    return int(re.search(r"rchar: (\d+)", Path("/proc/self/io").read_text()).group(1))


def test_readers_read_only_the_variables_asked_for(tmp_path: Path) -> None:
    store, io = tmp_path / "agg-0000.bp", "AggregatorOutput"
    big = np.zeros((100, 64, 1024), np.uint8)  # 6.5 MB per step that nobody asks for
    with FrameWriter(BP5_XML, io, store) as writer:
        for step in range(4):
            writer.write({"id": np.arange(100) + 100 * step, "big": big})
        writer.write({"big": big[:2]})  # a step without "id"
        writer.write({"id": np.array([400]), "big": big[:1]})
    before = _rchar()
    reader = StoreReader(BP5_XML, io, store, variables=["id"])
    batches = reader.read_new()
    read = _rchar() - before
    reader.close()
    assert [sorted(b) for b in batches] == [["id"]] * 5
    assert _ids(batches) == [*range(400), 400]
    assert reader.steps_read == 6  # the step lacking "id" was consumed (skipped)
    assert read < big.nbytes / 4, read  # the big variable's data was not read

    with FrameReader(BP5_XML, io, store, variables=["big", "id"]) as frames:
        first = frames.next(1.0)
        assert list(first) == ["big", "id"] and first["big"].shape == big.shape
    with FrameReader(BP5_XML, io, store) as frames:  # None: every variable
        assert sorted(frames.next(1.0)) == ["big", "id"]
    with pytest.raises(MissingVariables, match=r"no variable\(s\) \['id'\]"):
        read_store(store, ["id"])


def test_read_rows_by_random_access_while_the_store_is_appended_to(tmp_path: Path) -> None:
    store, io = tmp_path / "agg-0000.bp", "AggregatorOutput"
    with FrameWriter(BP5_XML, io, store) as first:
        _rows_step(first, 0, 5)
        _rows_step(first, 1, 3)
    with FrameWriter(BP5_XML, io, store, append=True) as appending:
        _rows_step(appending, 2, 6)
        got = read_rows(store, 2, [4, 0, 4, 1], ["id", "v"], xml=BP5_XML, io_name=io)
        assert sorted(got) == ["id", "v"]  # only the variables asked for
        assert got["id"].tolist() == [204, 200, 204, 201]  # in the order asked, repeats too
        assert got["v"].dtype == np.float64 and got["v"].shape == (4, 4)
        assert got["v"][:, 0].tolist() == [-204, -200, -204, -201]
        assert read_rows(store, 0, [3], ["x"])["x"].tolist() == [[3.0] * 3]  # plain BP5
        with pytest.raises(StreamError, match="no step 3"):
            read_rows(store, 3, [0], ["id"])
        _rows_step(appending, 3, 2)  # visible to the next call, writer still open
        assert read_rows(store, 3, [1], ["id"])["id"].tolist() == [301]
        with pytest.raises(StreamError, match=r"asked for \[2\]"):
            read_rows(store, 3, [2], ["id"])
        with pytest.raises(StreamError, match="no variable 'velocities'"):
            read_rows(store, 1, [0], ["velocities"])
        empty = read_rows(store, 1, [], ["x"])["x"]
        assert empty.shape == (0, 3) and empty.dtype == np.float32
    with pytest.raises(StreamOpenError, match=r"nothing\.bp"):
        read_rows(tmp_path / "nothing.bp", 0, [0], ["id"])


# --------------------------------------------------------------------------- delivery


def _frames_batch(sim: int, steps: list[int]) -> dict[str, np.ndarray]:
    n = len(steps)
    return {"sim_id": np.full(n, sim, np.int64), "segment_id": np.zeros(n, np.int64),
            "step": np.array(steps, np.int64), "rmsd": np.arange(n, dtype=np.float32)}


def test_stored_keys_drop_replayed_frames_and_ack_the_rest(tmp_path: Path) -> None:
    from ddmd_stream.streams import FrameWriter
    from ddmd_stream.streams.delivery import StoredKeys, read_ack

    store = tmp_path / "agg-0000.bp"
    with FrameWriter(BP5_XML, "AggregatorOutput", store) as writer:
        writer.write(_frames_batch(0, [0, 1, 2]))
        writer.write(_frames_batch(1, [5]))
    stored = StoredKeys.of_store(store)  # an aggregator restarted on it
    replay = stored.new_frames(0, _frames_batch(0, [1, 2, 3, 4]))
    assert replay["step"].tolist() == [3, 4] and replay["rmsd"].tolist() == [2.0, 3.0]
    assert stored.new_frames(1, _frames_batch(1, [5]))["step"].tolist() == []
    assert stored.new_frames(2, _frames_batch(2, [0]))["step"].tolist() == [0]
    assert stored.dropped == 3
    streams = {0: tmp_path / "sim-0000", 2: tmp_path / "sim-0002"}
    stored.acknowledge(streams, [0, 2])
    assert read_ack(streams[0]) == 4 and read_ack(streams[2]) == 0
    assert read_ack(tmp_path / "sim-0001") is None


def test_pump_passes_only_frames_after_its_greeting() -> None:
    from ddmd_stream.streams.delivery import HELLO
    from ddmd_stream.streams.pump import _Greeting

    frames, empty = _frames_batch(0, [1]), {}
    greeting = _Greeting(hello=7, expected=True)
    assert not greeting.passes(frames)  # written for the reader before
    assert not greeting.passes({HELLO: np.array([8])})  # another reader's greeting
    assert not greeting.passes(frames)
    assert not greeting.passes({HELLO: np.array([7])})
    assert greeting.passes(frames) and not greeting.passes(empty)
    plain = _Greeting(hello=7, expected=False)  # a writer without the handshake
    assert plain.passes(frames) and not plain.passes(empty)
