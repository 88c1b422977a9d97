"""Aggregator task: collects the streams of its simulations into one BP store.

`python -m ddmd_stream.aggregate -c TASK.yaml`
"""

from __future__ import annotations

import logging
import time

from ddmd_stream.streams import Batch, FrameWriter, StreamPoller, concat_batches, group_by_shape
from ddmd_stream.streams.batches import frame_count
from ddmd_stream.streams.delivery import StoredKeys
from ddmd_stream.task import TaskContext, run_task

logger = logging.getLogger(__name__)

MIN_BACKOFF_S = 0.01
DRAIN_GRACE_S = 15.0


class Aggregator:
    """Polls its simulations round robin; every `flush_interval_s` appends what came as one step
    per shape signature (simulations of structures of different sizes send frames that cannot
    share a step), then acknowledges the stored frames to their simulations. Frames replayed
    after a restart that the store already holds are dropped (`streams.delivery`)."""

    def __init__(self, ctx: TaskContext):
        self.ctx = ctx
        streams = ctx.config.streams
        self.settings = ctx.config.aggregation
        paths = {sim_id: ctx.run.sim_stream(sim_id) for sim_id in ctx.members}
        self.poller = StreamPoller(
            streams.adios_xml,
            streams.simulation_io,
            paths,
            streams.open_timeout_s,
            streams.liveness_timeout_s,
        )
        store = ctx.run.aggregator_store(ctx.index)
        self.stored = StoredKeys.of_store(store)  # before appending: replays are dropped
        self.store = FrameWriter(
            streams.adios_xml, streams.aggregator_io, store, streams.open_timeout_s, append=True
        )
        self.pending: list[tuple[int, Batch]] = []  # (sim_id, batch) in arrival order
        self.last_flush = time.monotonic()
        self.frames = 0

    def run(self) -> None:
        logger.info("aggregating simulations %s into %s", self.ctx.members, self.store.path)
        backoff = MIN_BACKOFF_S
        try:
            while not self.ctx.should_stop():
                got = self.poll_once()
                backoff = (
                    MIN_BACKOFF_S if got else min(backoff * 2, self.settings.idle_backoff_max_s)
                )
                if not got:
                    time.sleep(backoff)
            self.drain()
        finally:
            self.poller.close()
            self.store.close()
            self.ctx.events.event(
                "aggregated",
                frames=self.frames,
                bytes=self.store.bytes_written,
                put_s=self.store.put_seconds,
                replayed_dropped=self.stored.dropped,
            )

    def drain(self, grace_s: float = DRAIN_GRACE_S) -> None:
        """After a stop: read until every open stream has ended (its simulation stopped too)."""
        end = time.monotonic() + grace_s
        while self.poller.open_count and time.monotonic() < end:
            if not self.poll_once():
                time.sleep(MIN_BACKOFF_S * 5)
        self.poll_once(final=True)

    def poll_once(self, final: bool = False) -> int:
        """One round over all streams; returns the number of batches received."""
        started = time.perf_counter()
        got = self.poller.poll()
        self.pending.extend((sim, fresh) for sim, batch in got
                            if frame_count(fresh := self.stored.new_frames(sim, batch)))
        if got:
            self.ctx.events.event("read", batches=len(got), dur=time.perf_counter() - started)
        due = time.monotonic() - self.last_flush >= self.settings.flush_interval_s
        if self.pending and (due or final):
            self.flush()
        return len(got)

    def flush(self) -> None:
        """Append the pending batches: a step per shape signature, each simulation's frames in
        the order they came."""
        for group in group_by_shape(self.pending):
            batch = concat_batches(group)
            count = frame_count(batch)
            with self.ctx.events.span("write", frames=count):
                self.store.write(batch)
            self.frames += count
        self.stored.acknowledge(self.poller.paths, {sim for sim, _ in self.pending})
        self.pending.clear()
        self.last_flush = time.monotonic()
        self.ctx.update_status(frames=self.frames, open_streams=self.poller.open_count)


def main(ctx: TaskContext) -> None:
    Aggregator(ctx).run()


if __name__ == "__main__":
    raise SystemExit(run_task("aggregator", main))
