"""Exactly-once delivery of a simulation's frames across restarts of its reader.

SST drops the steps a writer puts while no reader is connected (an aggregator killed and not
yet restarted), and a killed reader takes the steps it held with it. Three small pieces close
the gap (`streams.replay.ReplayingWriter` is the writer's side):

- the **hello**: a new reader (a pump) drops every step until the writer greets it with a
  step holding only `HELLO` = the reader's `hello_id`; what follows is in the writer's order;
- the **ack** (`<stream>.acked`): after each store flush the aggregator records the largest
  frame key of that stream it has stored; the writer forgets frames up to it;
- **StoredKeys**: the aggregator drops frames whose key is not above the largest stored key of
  their simulation (a replay of frames stored before), read from its store at start.

A writer replays, in order, every frame above the last ack after each greeting, so the frames
of a simulation in a store are always the prefix of what it streamed, and none comes twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ddmd_stream.atomic import atomic_write
from ddmd_stream.frames import SEGMENT_ID, SIM_ID, STEP, batch_keys, frame_keys
from ddmd_stream.streams.adios import Batch
from ddmd_stream.streams.errors import StreamError

logger = logging.getLogger(__name__)

HELLO = "reader_hello"  # the only variable of a greeting step
ACK_SUFFIX = ".acked"
ACK_INTERVAL_S = 0.5


def hello_id(token: str) -> int:
    """The number a writer greets the reader with `token` by (63 bits of the token)."""
    return int(token[:15], 16)


def hello_of(batch: Batch) -> int | None:
    """The reader a greeting step greets, or None when `batch` is not a greeting."""
    if set(batch) != {HELLO}:
        return None
    return int(np.asarray(batch[HELLO]).reshape(-1)[0])


def ack_file(stream: Path) -> Path:
    return stream.with_name(stream.name + ACK_SUFFIX)


def write_ack(stream: Path, key: int) -> None:
    """Record that every frame of `stream` up to `key` is stored."""
    atomic_write(ack_file(stream), f"{key}\n", durable=False)


def read_ack(stream: Path) -> int | None:
    """The largest stored key of `stream`, or None (no ack yet, or an unreadable one)."""
    try:
        return int(ack_file(stream).read_text().strip())
    except (OSError, ValueError):
        return None


class StoredKeys:
    """The largest stored frame key of each simulation; drops frames at or below it."""

    def __init__(self, largest: Mapping[int, int] | None = None):
        self.largest: dict[int, int] = dict(largest or {})
        self.dropped = 0
        self._acked_at: dict[int, float] = {}

    @classmethod
    def of_store(cls, store: Path) -> StoredKeys:
        """What a BP store (an aggregator's, maybe from a run before a crash) holds."""
        from ddmd_stream.streams.store import read_store

        if not (store / "md.idx").exists():
            return cls()
        try:
            batch = read_store(store, [SIM_ID, SEGMENT_ID, STEP])
        except (StreamError, OSError, RuntimeError, ValueError) as error:
            logger.warning("%s: cannot read the frames stored so far (%s); replayed frames "
                           "may be stored twice", store, error)
            return cls()
        return cls(largest_keys(batch[SIM_ID], frame_keys(batch[SEGMENT_ID], batch[STEP])))

    def new_frames(self, sim_id: int, batch: Batch) -> Batch:
        """`batch` without the frames stored already; remembers the rest as stored."""
        keys = batch_keys(batch)
        if keys is None or not len(keys):
            return batch
        fresh = keys > self.largest.get(sim_id, -1)
        if fresh.any():
            self.largest[sim_id] = max(self.largest.get(sim_id, -1), int(keys[fresh].max()))
        if fresh.all():
            return batch
        self.dropped += int((~fresh).sum())
        return {name: np.asarray(values)[fresh] for name, values in batch.items()}

    def acknowledge(self, streams: Mapping[int, Path], sim_ids: Iterable[int]) -> None:
        """Write the acks of `sim_ids` (their frames were just stored), each at most every
        ACK_INTERVAL_S (a late ack only keeps frames a little longer at the writer)."""
        now = time.monotonic()
        for sim_id in sim_ids:
            if now - self._acked_at.get(sim_id, -ACK_INTERVAL_S) < ACK_INTERVAL_S:
                continue
            self._acked_at[sim_id] = now
            if sim_id in self.largest and sim_id in streams:
                try:
                    write_ack(streams[sim_id], self.largest[sim_id])
                except OSError as error:
                    logger.warning("cannot write the ack of %s: %s", streams[sim_id], error)


def largest_keys(sim_ids: np.ndarray, keys: np.ndarray) -> dict[int, int]:
    """The largest key of each simulation."""
    sim_ids = np.asarray(sim_ids, np.int64).reshape(-1)
    return {int(sim): int(keys[sim_ids == sim].max()) for sim in np.unique(sim_ids)}
